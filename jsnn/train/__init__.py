"""The trainer: a pure jitted step over one train-state pytree, data parallel over a mesh of
every device, Orbax checkpoints with automatic resume, metrics, progress and epoch hooks.

It knows no training method by name: a method acts only through the hooks, loss and gradient
that :func:`fit` is given (:mod:`jsnn.run` wires a config to them).
"""

from jsnn.train.config import TrainConfig, initialize_distributed
from jsnn.train.loop import Hook, TrainingDiverged, evaluate, fit
from jsnn.train.mesh import data_mesh, replicate, shard_batch
from jsnn.train.metrics import plot_curves, plot_scalars, read_metrics
from jsnn.train.optim import optimizer
from jsnn.train.step import (
    Gradient,
    TrainState,
    compiler_options,
    eval_step,
    make_train_step,
    train_step,
    value_and_grad,
)
from jsnn.train.workdir import ConfigChanged, DiskFull, Stopped, WorkdirBusy

__all__ = [
    "ConfigChanged",
    "DiskFull",
    "Gradient",
    "Hook",
    "Stopped",
    "TrainConfig",
    "TrainState",
    "TrainingDiverged",
    "WorkdirBusy",
    "compiler_options",
    "data_mesh",
    "eval_step",
    "evaluate",
    "fit",
    "initialize_distributed",
    "make_train_step",
    "optimizer",
    "plot_curves",
    "plot_scalars",
    "read_metrics",
    "replicate",
    "shard_batch",
    "train_step",
    "value_and_grad",
]
