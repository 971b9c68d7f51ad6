"""Training configuration: one dataclass, named recipes, and command-line overrides of any field."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Sequence

import jax

from jsnn._checks import positive_float, positive_int
from jsnn.models.common import REMAT_KINDS

__all__ = ["Config", "initialize_distributed", "parse_args"]

CLUSTER_ARGUMENTS = ("distributed", "coordinator_address", "num_processes", "process_id")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run needs; saved as ``config.json`` in the workdir.

    The defaults train the digits net of the quickstart. Experiments start from a named recipe
    and override fields, e.g. ``dataclasses.replace(config, epochs=10)`` or ``--epochs 10``.
    """

    # Data
    dataset: str = "digits"
    data_dir: str | None = None
    augment: bool | None = None  # None: the data set's default (crop + flip for images)
    autoaugment: bool = False
    cutout: int = 0  # side of the Cutout square in pixels, 0 for none
    # Model
    model: str = "digits_net"
    steps: int = 4
    neuron: str = "lif"
    decay: float | None = None
    v_th: float = 0.5
    reset: str = "hard"
    detach_reset: bool = False
    surrogate: str = "dspike"
    surrogate_parameter: float | None = None  # b, beta or alpha; None: the surrogate's default
    spiking: bool = True  # False trains the model's ANN twin (ReLU, no time axis)
    # The dtype inputs are cast to and convolutions and linear layers compute in. With
    # bfloat16, parameters, optimizer state, BN statistics (running and per batch) and the loss
    # stay float32. float64 makes the whole run 64-bit: it needs JAX_ENABLE_X64=1 and makes runs
    # on different device counts agree to rounding (float32 rounding flips spikes at the
    # threshold, and spiking networks amplify such flips).
    compute_dtype: str = "float32"
    norm: str = "tdbn"
    # Rematerialisation in the backward pass (jsnn.models.common): "none" keeps every
    # activation; "block" keeps only each residual block's (or conv unit's) input and recomputes
    # the rest; "conv" keeps the convolution outputs too and recomputes norms and neurons.
    remat: str = "none"
    # Loss and optimisation
    loss: str = "mean_ce"
    epochs: int = 15
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    warmup_from: float = 0.0  # the warm-up starts at warmup_from * lr (CPNG: 0.1)
    grad_clip: float | None = None
    # Method: "surrogate" trains with the configured surrogate as it is; "dspike" re-chooses
    # the Dspike temperature b before every epoch (Dspike Algorithm 1; b starts at
    # surrogate_parameter, default 1): FDG step fdg_eps, candidates b and b +- temperature_step,
    # FDG of fdg_layer (dotted parameter path; None: the first layer's kernel), fdg_chunk
    # perturbed forward passes per vmapped call, and with fdg_directions = k > 0 the FDG
    # sketched on k random directions instead of every coordinate.
    method: str = "surrogate"
    fdg_eps: float = 0.1
    temperature_step: float = 0.2
    fdg_layer: str | None = None
    fdg_chunk: int = 16
    fdg_directions: int = 0
    # Initialisation and Time Inheritance Training (Dspike Sec. 4.4, 5.2). init_from: the
    # workdir of a finished run whose final state initialises this model (a trained ANN twin's
    # weights, or a spiking run of the same model at any T). ann_init: first train the ANN twin
    # (same recipe) in workdir/ann and start from it. tit_steps: after training at `steps`,
    # fine-tune at each of these T in turn, each from the previous round, for tit_epochs at
    # tit_lr (with ann_init or tit_steps every round has its own workdir/T<steps>).
    init_from: str | None = None
    ann_init: bool = False
    tit_steps: tuple[int, ...] = ()
    tit_epochs: int = 50
    tit_lr: float = 0.004
    # Run
    seed: int = 0
    workdir: str = "runs/quickstart"
    checkpoint_every: int = 200
    log_every: int = 20
    keep_checkpoints: int = 2
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self):
        positive = ("steps", "epochs", "batch_size", "checkpoint_every", "log_every")
        for name in (*positive, "keep_checkpoints", "fdg_chunk", "tit_epochs"):
            positive_int(name, getattr(self, name))
        for name in ("fdg_eps", "temperature_step", "tit_lr"):
            positive_float(name, getattr(self, name))
        object.__setattr__(self, "tit_steps", tuple(self.tit_steps))  # a list from JSON
        for steps in self.tit_steps:
            positive_int("tit_steps entry", steps)
        if isinstance(self.fdg_directions, bool) or not (
            isinstance(self.fdg_directions, int) and self.fdg_directions >= 0
        ):
            raise ValueError(
                f"fdg_directions must be an integer >= 0 (0: the exact FDG), "
                f"got {self.fdg_directions!r}"
            )
        for name, allowed in (
            ("loss", ("mean_ce", "tet")),
            ("optimizer", ("sgd", "adam", "adamw")),
            ("schedule", ("cosine", "constant")),
            ("norm", ("tdbn", "bn")),
            ("compute_dtype", ("float32", "bfloat16", "float64")),
            ("remat", REMAT_KINDS),
            ("method", ("surrogate", "dspike")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or not 0 <= self.momentum < 1:
            raise ValueError(
                "weight_decay and warmup_epochs must be >= 0 and momentum in [0, 1), got "
                f"{self.weight_decay!r}, {self.warmup_epochs!r}, {self.momentum!r}"
            )
        if not 0 <= self.warmup_from <= 1:
            raise ValueError(f"warmup_from must lie in [0, 1], got {self.warmup_from!r}")
        if self.compute_dtype == "float64" and not jax.config.jax_enable_x64:
            raise ValueError(
                "compute_dtype='float64' needs 64-bit JAX: set JAX_ENABLE_X64=1 before starting"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip!r}")
        if self.method == "dspike" and (self.surrogate != "dspike" or not self.spiking):
            raise ValueError(
                "method='dspike' searches the temperature of Dspike neurons: it needs "
                f"surrogate='dspike' and spiking=True, got surrogate={self.surrogate!r}, "
                f"spiking={self.spiking!r}"
            )
        if (self.ann_init or self.tit_steps) and not self.spiking:
            raise ValueError("ann_init and tit_steps are for spiking runs (spiking=True)")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Config:
        """The config a run saved as ``config.json``."""
        return cls(**json.loads(text))


def _field_parser(annotation: str):
    """An argparse ``type`` for a field annotated ``int``, ``float | None``, ``bool``, ..."""
    hint = typing.get_type_hints(Config)[annotation]
    if typing.get_origin(hint) is tuple:  # tuple[int, ...] as "4,2"; "" or "none" for ()
        item = typing.get_args(hint)[0]

        def parse_items(text: str):
            if text.strip().lower() in ("", "none"):
                return ()
            return tuple(item(part) for part in text.split(","))

        return parse_items
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    base = next(option for option in options if option is not type(None))
    nullable = type(None) in options

    def parse(text: str):
        if nullable and text.lower() == "none":
            return None
        if base is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
            return text.lower() in ("true", "1", "yes")
        return base(text)

    return parse


def parse_args(
    argv: Sequence[str] | None, recipes: dict[str, Config], *, description: str, default: str
) -> tuple[Config, dict]:
    """The recipe named by ``--recipe`` with every other ``--field value`` overriding it, and
    the keyword arguments for :func:`jsnn.train.initialize_distributed` (multi-host runs)."""
    parser = argparse.ArgumentParser(description=description)
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
    aliases = {"steps": ("--T",)}  # the papers' name for the number of time steps
    for field in dataclasses.fields(Config):
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            *aliases.get(field.name, ()),
            dest=field.name,
            type=_field_parser(field.name),
            default=argparse.SUPPRESS,
            metavar=str(field.type).replace(" ", ""),
            help=f"(recipe {default!r}: {getattr(recipes[default], field.name)!r})",
        )
    args = vars(parser.parse_args(argv))
    recipe = recipes[args.pop("recipe")]
    cluster = {name: args.pop(name) for name in CLUSTER_ARGUMENTS}
    return dataclasses.replace(recipe, **args), cluster


def initialize_distributed(
    *,
    distributed: bool = False,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Joins a multi-process run (``jax.distributed.initialize``) when asked to, before any
    other JAX call. With only ``distributed``, JAX detects the cluster (Cloud TPU, Slurm,
    Kubernetes, MPI); elsewhere every process passes the coordinator's address, the number of
    processes and its own id."""
    explicit = (coordinator_address, num_processes, process_id)
    if not distributed and all(value is None for value in explicit):
        return
    if not distributed and None in explicit:
        raise ValueError(
            "a multi-process run needs --coordinator-address, --num-processes and --process-id "
            f"together, got {coordinator_address!r}, {num_processes!r}, {process_id!r}"
        )
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
