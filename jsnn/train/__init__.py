"""The trainer: a pure jitted step over one train-state pytree, data parallel over a mesh of
every device, Orbax checkpoints with automatic resume, metrics, progress and epoch hooks
(Dspike's temperature search is one), initialisation from earlier runs and Time Inheritance
Training."""

from jsnn.train.build import build_dataset, build_model, initialize_from, main, stages
from jsnn.train.config import Config, initialize_distributed, parse_args
from jsnn.train.dspike import temperature_search_hook
from jsnn.train.loop import Hook, TrainingDiverged, evaluate, fit
from jsnn.train.mesh import data_mesh, replicate, shard_batch
from jsnn.train.metrics import plot_curves, plot_temperature, read_metrics
from jsnn.train.step import TrainState, batch_loss, compiler_options, eval_step, train_step

__all__ = [
    "Config",
    "Hook",
    "TrainState",
    "TrainingDiverged",
    "batch_loss",
    "build_dataset",
    "build_model",
    "compiler_options",
    "data_mesh",
    "eval_step",
    "evaluate",
    "fit",
    "initialize_distributed",
    "initialize_from",
    "main",
    "parse_args",
    "plot_curves",
    "plot_temperature",
    "read_metrics",
    "replicate",
    "shard_batch",
    "stages",
    "temperature_search_hook",
    "train_step",
]
