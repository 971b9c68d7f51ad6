"""Plain surrogate-gradient training: every layer keeps the surrogate the model was built with.

The default method (``--method.name surrogate``): it adds nothing to the trainer.
"""

from __future__ import annotations

import dataclasses

from jsnn.methods.base import Method

__all__ = ["METHOD", "PlainSurrogate"]


@dataclasses.dataclass(frozen=True)
class PlainSurrogate(Method):
    """The model's own surrogate gradients, unchanged over the run; no options."""

    name = "surrogate"


METHOD = PlainSurrogate
