"""The trainer: a pure jitted step over one train-state pytree, data parallel over a mesh of
every device, Orbax checkpoints with automatic resume, metrics, progress and epoch hooks."""

from jsnn.train.build import build_dataset, build_model, main
from jsnn.train.config import Config, initialize_distributed, parse_args
from jsnn.train.loop import Hook, TrainingDiverged, evaluate, fit
from jsnn.train.mesh import data_mesh, replicate, shard_batch
from jsnn.train.metrics import plot_curves, read_metrics
from jsnn.train.step import TrainState, eval_step, train_step

__all__ = [
    "Config",
    "Hook",
    "TrainState",
    "TrainingDiverged",
    "build_dataset",
    "build_model",
    "data_mesh",
    "eval_step",
    "evaluate",
    "fit",
    "initialize_distributed",
    "main",
    "parse_args",
    "plot_curves",
    "read_metrics",
    "replicate",
    "shard_batch",
    "train_step",
]
