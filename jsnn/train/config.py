"""The trainer's section of a run's configuration, and joining a multi-process run."""

from __future__ import annotations

import dataclasses

import jax

from jsnn._checks import positive_int
from jsnn._fields import option
from jsnn.losses import LOSSES

__all__ = ["TrainConfig", "initialize_distributed"]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "constant")
COMPUTE_DTYPES = ("float32", "bfloat16", "float64")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a model is trained: loss, optimisation, precision and the workdir of the run.

    The defaults train the quickstart's digits net. The trainer (:func:`jsnn.train.fit`) needs
    only this section; the data, the model and the method are built before it is called.
    """

    loss: str = option("mean_ce", f"loss of the outputs [B, T, classes]: {tuple(LOSSES)}")
    epochs: int = option(15, "epochs to train")
    batch_size: int = option(32, "global batch size (divisible by the number of devices)")
    optimizer: str = option("adam", f"optimizer: {OPTIMIZERS}")
    lr: float = option(0.01, "peak learning rate")
    momentum: float = option(0.9, "SGD momentum, in [0, 1)")
    nesterov: bool = option(False, "Nesterov momentum (SGD)")
    weight_decay: float = option(0.0, "weight decay (coupled for SGD/Adam, decoupled for AdamW)")
    schedule: str = option("cosine", f"learning-rate schedule after the warm-up: {SCHEDULES}")
    warmup_epochs: float = option(0.0, "epochs of linear warm-up")
    warmup_from: float = option(0.0, "the warm-up starts at warmup_from * lr (CPNG: 0.1)")
    grad_clip: float | None = option(None, "clip gradients to this global norm (none: off)")
    compute_dtype: str = option(
        "float32",
        f"dtype of the inputs, convolutions and linear layers: {COMPUTE_DTYPES}. With bfloat16 "
        "the parameters, optimizer state, BN statistics and loss stay float32; float64 makes "
        "the whole run 64-bit (needs JAX_ENABLE_X64=1) and runs on different device counts "
        "agree to rounding",
    )
    seed: int = option(
        0, "seed of the initialisation, the batch order and any random choice of a hook"
    )
    workdir: str = option("runs/quickstart", "where checkpoints, metrics and plots go")
    checkpoint_every: int = option(200, "steps between checkpoints (and at every epoch end)")
    log_every: int = option(20, "steps between train-metric records")
    keep_checkpoints: int = option(2, "checkpoints kept")
    progress: bool = option(True, "progress bars")
    tensorboard: bool = option(True, "TensorBoard logs in workdir/tensorboard")

    def __post_init__(self):
        positive = ("epochs", "batch_size", "checkpoint_every", "log_every", "keep_checkpoints")
        for name in positive:
            positive_int(name, getattr(self, name))
        for name, allowed in (
            ("loss", tuple(LOSSES)),
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("compute_dtype", COMPUTE_DTYPES),
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
