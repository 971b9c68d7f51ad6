"""What a training method may contribute to a run, each part optional.

A method is a frozen dataclass: its fields are its options, the ``method`` section of a run's
config (``--method.<field>`` on the command line); its methods are what it adds to a run, and
each default adds nothing. :mod:`jsnn.run` asks a method for these parts and hands them to the
trainer, which knows only hooks, a loss and a gradient.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

from flax import nnx

from jsnn.losses import LossFn

__all__ = ["Hook", "Method"]

# The trainer's hook contract (jsnn.train.Hook): ``hook(model, epoch, batch) -> scalars | None``
# with the live model holding the train state, the epoch from 0 and a training batch sharded like
# a training step's: the epoch's first for an epoch-start hook, its last for an epoch-end hook.
# A hook may set the model's values, not its structure.
Hook = Callable[[nnx.Module, int, dict], dict[str, float] | None]


@dataclasses.dataclass(frozen=True)
class Method:
    """The base every method extends; its defaults add nothing to a run.

    ``config`` below is the whole run config (:class:`jsnn.config.Config`: sections ``data``,
    ``model``, ``train``, ``init``, ``method``).
    """

    # The name a config gives (``--method.name``): the module jsnn.methods.<name> defines it,
    # or, for a method outside this package, its module's dotted path.
    name: ClassVar[str]
    # Flat command-line flags of earlier versions -> this method's field of the same meaning.
    legacy_flags: ClassVar[Mapping[str, str]] = MappingProxyType({})
    # Config fields (dotted names) the method trains with, set when a config switches to it,
    # unless the same change names them (``--method.name cpng --model.surrogate arctan``).
    settings: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    def check(self, config: Any) -> None:
        """Raises ValueError (naming the field) if this method cannot train ``config``."""

    def neurons(self, config: Any, neuron: Callable[[], nnx.Module]) -> Callable[[], nnx.Module]:
        """The neuron factory the model is built with, given the one ``config.model`` makes."""
        return neuron

    def model(self, config: Any, dataset: Any) -> nnx.Module | None:
        """A model of the method's own, shaped for ``dataset`` (its ``input_shape``,
        ``num_classes``); None: the zoo's ``config.model.name``."""
        return None

    def loss(self, config: Any) -> LossFn | None:
        """The training loss of the outputs ``[B, T, classes]``; None: ``config.train.loss``."""
        return None

    def epoch_start(self, model: nnx.Module, config: Any) -> Sequence[Hook]:
        """Hooks run before every epoch (see :data:`Hook`), given the freshly built model."""
        return ()

    def epoch_end(self, model: nnx.Module, config: Any) -> Sequence[Hook]:
        """Hooks run after every epoch's evaluation."""
        return ()

    def plots(self, workdir: pathlib.Path) -> list[pathlib.Path]:
        """Figures of what the hooks recorded (``metrics.jsonl``), written to ``workdir``."""
        return []

    def options(self) -> dict[str, Any]:
        """The fields as plain values (the config's method section, without its name)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
