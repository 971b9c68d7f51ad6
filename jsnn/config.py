"""A run's configuration in sections, saved as ``config.json``, and its command line.

:class:`Config` has five sections: ``data`` (:class:`DataConfig`), ``model``
(:class:`ModelConfig`), ``train`` (:class:`jsnn.train.TrainConfig`, all the trainer sees),
``init`` (:class:`InitConfig`: initialisation from other runs, Time Inheritance Training) and
``method`` (the training method, a :class:`jsnn.methods.base.Method` whose fields are its
options). Recipes (:mod:`jsnn.recipes`) are plain Python values of it; any field is changed by
its dotted name, in Python with :meth:`Config.override` and on the command line with
``--section.field value`` (``--train.epochs 10``, ``--method.eps 0.05``). The flat flags of
earlier versions (``--epochs``, ``--T``, ``--dataset``, ``--fdg-eps``, ...) keep their meaning.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from jsnn import data, methods, models
from jsnn import surrogate as surrogates
from jsnn._checks import positive_float, positive_int
from jsnn._fields import option, text_parser
from jsnn.methods.base import Method
from jsnn.methods.surrogate import PlainSurrogate
from jsnn.neuron import check_neuron_parameters
from jsnn.train.config import TrainConfig

__all__ = ["Config", "DataConfig", "InitConfig", "ModelConfig", "parse_args"]

CLUSTER_ARGUMENTS = ("distributed", "coordinator_address", "num_processes", "process_id")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The data set and its augmentation."""

    name: str = option("digits", "data set (jsnn.data.names())")
    data_dir: str | None = option(None, "where tfds / tonic data sets are prepared")
    augment: bool | None = option(
        None, "random crop + flip for images, event augmentation for events (none: the set's)"
    )
    autoaugment: bool = option(False, "AutoAugment's CIFAR policy (image sets)")
    cutout: int = option(0, "side of the Cutout square in pixels, 0 for none (image sets)")

    def __post_init__(self):
        if self.name not in data.names():
            raise ValueError(f"data.name must be one of {data.names()}, got {self.name!r}")
        if isinstance(self.cutout, bool) or not isinstance(self.cutout, int) or self.cutout < 0:
            raise ValueError(f"data.cutout must be an integer >= 0, got {self.cutout!r}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The model of the zoo and its neurons, norm and rematerialisation."""

    name: str = option("digits_net", "model of the zoo (jsnn.models.names())")
    time_steps: int = option(4, "T, the time steps static inputs are encoded to (event frames)")
    neuron: str = option("lif", f"neuron: {models.NEURON_KINDS}")
    decay: float | None = option(None, "membrane decay (none: 0.25 for LIF, 0.5 to start PLIF)")
    v_th: float = option(0.5, "firing threshold")
    reset: str = option("hard", "reset after a spike: hard, soft or none")
    detach_reset: bool = option(False, "no gradient through the reset")
    surrogate: str = option("dspike", f"surrogate gradient: {surrogates.names()}")
    surrogate_options: Mapping[str, float] = option(
        {}, "the surrogate's shape parameters, e.g. b=1.0 (none: its defaults)"
    )
    spiking: bool = option(True, "false trains the model's ANN twin (ReLU, no time axis)")
    norm: str = option("tdbn", f"norm: {models.NORM_KINDS} (tdBN or time-folded BN)")
    remat: str = option(
        "none",
        f"rematerialisation in the backward pass: {models.REMAT_KINDS}; block keeps only each "
        "block's input, conv also the convolution outputs",
    )

    def __post_init__(self):
        object.__setattr__(
            self, "surrogate_options", MappingProxyType(dict(self.surrogate_options))
        )
        positive_int("model.time_steps", self.time_steps)
        if self.name.lower() not in models.names():
            raise ValueError(f"model.name must be one of {models.names()}, got {self.name!r}")
        for name, allowed in (
            ("norm", models.NORM_KINDS),
            ("remat", models.REMAT_KINDS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"model.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        # Checked without building anything: a config must not start JAX's backend (a
        # multi-process run initialises it after parsing its command line).
        cls = surrogates.kind(self.surrogate)
        for name, value in self.surrogate_options.items():
            if name not in cls.parameters:
                raise ValueError(
                    f"model.surrogate_options: {self.surrogate!r} takes {cls.parameters}, "
                    f"got {name!r}"
                )
            positive_float(f"model.surrogate_options {name}", value)
        if self.neuron not in models.NEURON_KINDS:
            raise ValueError(
                f"model.neuron must be one of {models.NEURON_KINDS}, got {self.neuron!r}"
            )
        if self.neuron == "if" and self.decay not in (None, 1.0):
            raise ValueError(f"model.neuron 'if' has decay 1 (no leak), got {self.decay!r}")
        check_neuron_parameters(
            decay=1.0 if self.decay is None else self.decay, v_th=self.v_th, reset=self.reset
        )

    def surrogate_function(self) -> surrogates.Surrogate:
        """The surrogate this section names, with its shape parameters."""
        return surrogates.get(self.surrogate, **self.surrogate_options)

    def neuron_factory(self) -> models.NeuronFactory:
        """The zoo's neuron factory for these neurons (:func:`jsnn.models.neuron_factory`)."""
        return models.neuron_factory(
            self.neuron,
            decay=self.decay,
            v_th=self.v_th,
            reset=self.reset,
            detach_reset=self.detach_reset,
            surrogate=self.surrogate_function(),
        )


@dataclasses.dataclass(frozen=True)
class InitConfig:
    """Where a run's model starts: from scratch, from another run, from its trained ANN twin,
    and Time Inheritance Training (Dspike Sec. 4.4, 5.2), as rounds of runs (:func:`jsnn.run.
    stages`), each in its own workdir under ``train.workdir`` (``ann``, ``T6``, ``T4``, ...)."""

    from_workdir: str | None = option(
        None,
        "workdir of a finished run whose final state initialises the model (a trained ANN "
        "twin's weights, or a spiking run of the same model at any T)",
    )
    ann: bool = option(False, "first train the ANN twin (same recipe) and start from it")
    tit_steps: tuple[int, ...] = option(
        (), "after training at model.time_steps, fine-tune at each of these T in turn, e.g. 4,2"
    )
    tit_epochs: int = option(50, "epochs of each Time Inheritance round")
    tit_lr: float = option(0.004, "learning rate of each Time Inheritance round")

    def __post_init__(self):
        object.__setattr__(self, "tit_steps", tuple(self.tit_steps))  # a list from JSON
        for steps in self.tit_steps:
            positive_int("init.tit_steps entry", steps)
        positive_int("init.tit_epochs", self.tit_epochs)
        positive_float("init.tit_lr", self.tit_lr)


SECTIONS: Mapping[str, type] = MappingProxyType(
    {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "init": InitConfig}
)

# Flat field names of earlier versions whose section field has another name.
_RENAMED = MappingProxyType(
    {
        "dataset": "data.name",
        "model": "model.name",
        "steps": "model.time_steps",
        "method": "method.name",
        "init_from": "init.from_workdir",
        "ann_init": "init.ann",
    }
)
_REMOVED = MappingProxyType(
    {"surrogate_parameter": "model.surrogate_options (e.g. --model.surrogate-options b=1.0)"}
)


def _legacy_names() -> dict[str, str]:
    """Every flat name of earlier versions -> its dotted name (the method's own aside)."""
    names = {
        field.name: f"{section}.{field.name}"
        for section, cls in SECTIONS.items()
        for field in dataclasses.fields(cls)
        if field.name not in ("name", "time_steps", "surrogate_options", "from_workdir", "ann")
    }
    return {**names, **_RENAMED}


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run needs, in sections; saved as ``config.json`` in the workdir.

    The defaults train the digits net of the quickstart with plain surrogate gradients.
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    init: InitConfig = dataclasses.field(default_factory=InitConfig)
    method: Method = dataclasses.field(default_factory=PlainSurrogate)

    def __post_init__(self):
        for section, cls in (*SECTIONS.items(), ("method", Method)):
            if not isinstance(getattr(self, section), cls):
                raise TypeError(
                    f"{section} must be a {cls.__name__}, got {type(getattr(self, section))!r}"
                )
        if (self.init.ann or self.init.tit_steps) and not self.model.spiking:
            raise ValueError("init.ann and init.tit_steps are for spiking runs (model.spiking)")
        rounds = (self.model.time_steps, *self.init.tit_steps)
        if len(set(rounds)) != len(rounds):
            raise ValueError(f"model.time_steps and init.tit_steps must all differ, got {rounds}")
        self.method.check(self)

    def override(self, changes: Mapping[str, Any]) -> Config:
        """This config with the fields named by dotted names changed, e.g. ``{"train.epochs":
        10, "model.time_steps": 6, "method.name": "dspike", "method.eps": 0.05}``. A new
        ``method.name`` starts from that method's defaults and its ``settings`` (the fields it
        trains with, e.g. CPNG's triangular surrogate), which ``changes`` may set otherwise.
        The flat names of earlier versions (``"epochs"``, ``"steps"``, ``"fdg_eps"``, ...) are
        accepted too."""
        legacy = _legacy_names()
        sections: dict[str, dict[str, Any]] = {name: {} for name in (*SECTIONS, "method")}
        method_name = next(
            (value for key, value in changes.items() if legacy.get(key, key) == "method.name"),
            self.method.name,
        )
        same = method_name == self.method.name
        cls = type(self.method) if same else methods.get(method_name)
        if cls is not type(self.method):  # its settings first: the changes' own values win
            changes = {**cls.settings, **changes}
        for key, value in changes.items():
            if key in _REMOVED:
                raise ValueError(f"{key} is no longer a field: use {_REMOVED[key]}")
            dotted = legacy.get(key, key)
            section, _, field = dotted.partition(".")
            if dotted == "method.name":
                continue
            if section in sections and field:
                sections[section][field] = value
            else:
                sections["method"][key] = value  # a method's own flat name, resolved below
        replaced = {
            name: _replace(getattr(self, name), fields, name)
            for name, fields in sections.items()
            if name != "method"
        }
        base = self.method.options() if cls is type(self.method) else {}
        options = {}
        for key, value in sections["method"].items():
            name = cls.legacy_flags.get(key, key)
            if name not in {field.name for field in dataclasses.fields(cls)}:
                raise ValueError(
                    f"{key!r} is not a field of any section nor an option of method "
                    f"{cls.name!r} (its options: {sorted(base or cls().options())})"
                )
            options[name] = value
        return Config(**replaced, method=cls(**{**base, **options}))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The sections as plain values (JSON types), the method's with its ``name``."""
        sections = {
            name: {
                field.name: _plain(getattr(getattr(self, name), field.name))
                for field in dataclasses.fields(cls)
            }
            for name, cls in SECTIONS.items()
        }
        sections["method"] = {"name": self.method.name, **self.method.options()}
        return sections

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, sections: Mapping[str, Any]) -> Config:
        """The config of :meth:`to_dict`; also reads the flat ``config.json`` of earlier
        versions."""
        if "train" not in sections:  # flat: every field by its old name
            return _from_flat(dict(sections))
        changes = {
            f"{section}.{field}": value
            for section, fields in sections.items()
            for field, value in fields.items()
        }
        method = changes.pop("method.name", PlainSurrogate.name)
        return cls().override({"method.name": method, **changes})

    @classmethod
    def from_json(cls, text: str) -> Config:
        """The config a run saved as ``config.json``."""
        return cls.from_dict(json.loads(text))


def _replace(section, fields: dict[str, Any], name: str):
    known = {field.name for field in dataclasses.fields(section)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{name} has no field {unknown[0]!r}; its fields: {sorted(known)}")
    return dataclasses.replace(section, **fields)


def _plain(value):
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _from_flat(flat: dict[str, Any]) -> Config:
    parameter = flat.pop("surrogate_parameter", None)
    if parameter is not None:
        name = surrogates.kind(flat.get("surrogate", "dspike")).parameters[0]
        flat["model.surrogate_options"] = {name: parameter}
    method = flat.pop("method", PlainSurrogate.name)
    # Earlier versions stored every method's options whatever the method: keep the run's own.
    own = methods.get(method).legacy_flags
    others = {key for name in methods.names() for key in methods.get(name).legacy_flags}
    kept = {key: value for key, value in flat.items() if key in own or key not in others}
    return Config().override({"method.name": method, **kept})


# ----------------------------------------------------------------------------------------------
# Command line


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_args(
    argv: Sequence[str] | None, recipes: Mapping[str, Config], *, description: str, default: str
) -> tuple[Config, dict]:
    """The recipe named by ``--recipe`` with every other ``--section.field value`` overriding
    it, and the keyword arguments for :func:`jsnn.train.initialize_distributed` (multi-host
    runs). ``--method.name`` (or ``--method``) picks the method whose options the other
    ``--method.*`` flags set; ``--help`` lists every field of the recipe and that method."""
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    first.add_argument("--recipe", choices=sorted(recipes), default=default)
    first.add_argument("--method.name", "--method", dest="method", default=None)
    known, _ = first.parse_known_args(argv)
    recipe = recipes[known.recipe]
    try:
        method_cls = methods.get(known.method) if known.method else type(recipe.method)
    except ValueError as error:
        first.error(str(error))
    same = method_cls is type(recipe.method)
    values = recipe.to_dict()
    values["method"] = (recipe.method if same else method_cls()).options()
    for dotted, value in () if same else method_cls.settings.items():  # shown in --help
        section, _, field = dotted.partition(".")
        values[section][field] = value

    parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
    parser.add_argument(
        "--recipe", choices=sorted(recipes), default=default, help="named configuration"
    )
    cluster = parser.add_argument_group("multi-process runs (every process runs the same command)")
    cluster.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run; on Cloud TPU, Slurm and Kubernetes nothing else is needed",
    )
    cluster.add_argument("--coordinator-address", help="HOST:PORT of process 0")
    cluster.add_argument("--num-processes", type=int)
    cluster.add_argument("--process-id", type=int)
    aliases: dict[str, list[str]] = {}
    for old, new in _legacy_names().items():
        aliases.setdefault(new, []).append(_flag(old))
    aliases["model.time_steps"].append("--T")  # the papers' name for the number of steps
    for old, new in method_cls.legacy_flags.items():
        aliases.setdefault(f"method.{new}", []).append(_flag(old))
    for section, cls in (*SECTIONS.items(), ("method", method_cls)):
        group = parser.add_argument_group(
            f"{section} section" + (f" (method {method_cls.name!r})" if section == "method" else "")
        )
        if section == "method":
            group.add_argument(
                "--method.name",
                *aliases.pop("method.name"),
                dest="method.name",
                default=argparse.SUPPRESS,
                help=f"training method: {methods.names()} or the dotted path of a module "
                f"defining METHOD (recipe: {recipe.method.name!r})",
            )
        for field in dataclasses.fields(cls):
            dotted = f"{section}.{field.name}"
            parse = (
                _mapping_parser
                if field.name == "surrogate_options"
                else text_parser(cls, field.name)
            )
            group.add_argument(
                _flag(dotted),
                *aliases.get(dotted, ()),
                dest=dotted,
                type=parse,
                default=argparse.SUPPRESS,
                metavar=str(field.type).replace(" ", "").replace("Mapping[str,float]", "K=V,..."),
                help=f"{field.metadata.get('help', '')} (recipe: {values[section][field.name]!r})",
            )
    args = vars(parser.parse_args(argv))
    args.pop("recipe")
    cluster_args = {name: args.pop(name) for name in CLUSTER_ARGUMENTS}
    if not same:
        args["method.name"] = method_cls.name
    try:
        config = recipe.override(args)
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    return config, cluster_args


def _mapping_parser(text: str) -> dict[str, float]:
    """``"b=1.0,width=2"`` as ``{"b": 1.0, "width": 2.0}``; ``""`` or ``"none"`` for ``{}``."""
    if text.strip().lower() in ("", "none"):
        return {}
    pairs = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        try:
            pairs[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"expected name=number pairs, got {text!r}")
    return pairs
