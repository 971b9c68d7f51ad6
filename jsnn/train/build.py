"""From a :class:`~jsnn.train.config.Config` to the data set, the model and a whole run."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
from flax import nnx

from jsnn import data, models, surrogate
from jsnn.layers import TDBatchNorm
from jsnn.models import Classifier
from jsnn.train.config import Config, initialize_distributed, parse_args
from jsnn.train.loop import fit
from jsnn.train.metrics import plot_curves

__all__ = ["build_dataset", "build_model", "main"]


def build_dataset(config: Config) -> data.Dataset:
    """The data set ``config.dataset``; event sets are binned into ``config.steps`` frames."""
    options = {} if config.augment is None else {"augment": config.augment}
    if config.dataset in data.IMAGE_SETS:
        options.update(autoaugment=config.autoaugment, cutout=config.cutout or False)
    elif config.dataset != "digits":
        options["steps"] = config.steps
    return data.get(config.dataset, data_dir=config.data_dir, **options)


def build_model(config: Config, dataset: data.Dataset) -> Classifier:
    """The model ``config.model`` shaped for ``dataset``, with the configured neurons and norm
    (or, with ``spiking=False``, its ANN twin)."""
    kwargs = {
        "num_classes": dataset.num_classes,
        "in_channels": dataset.input_shape[-1],
        "rngs": nnx.Rngs(config.seed),
    }
    if not config.spiking:
        return models.ann_twin(config.model, **kwargs)
    cls = type(surrogate.get(config.surrogate))
    parameters = (
        {}
        if config.surrogate_parameter is None
        else {cls.parameters[0]: config.surrogate_parameter}
    )
    neuron = models.neuron_factory(
        config.neuron,
        decay=config.decay,
        v_th=config.v_th,
        reset=config.reset,
        detach_reset=config.detach_reset,
        surrogate=surrogate.get(config.surrogate, **parameters),
    )
    norm = (
        functools.partial(TDBatchNorm, v_th=config.v_th)
        if config.norm == "tdbn"
        else TDBatchNorm.time_folded
    )
    return models.get(config.model, steps=config.steps, neuron=neuron, norm=norm, **kwargs)


def main(
    argv: Sequence[str] | None, recipes: dict[str, Config], *, default: str, description: str
) -> dict[str, float]:
    """A command-line entry point: the recipe with its overrides, trained, evaluated and its
    curves plotted (``curves.png`` in the workdir). Returns the final test metrics."""
    config, cluster = parse_args(argv, recipes, description=description, default=default)
    initialize_distributed(**cluster)
    dataset = build_dataset(config)
    metrics = fit(config, build_model(config, dataset), dataset)
    if jax.process_index() == 0:
        curves = plot_curves(config.workdir)
        print(f"final test accuracy: {metrics['accuracy']:.4f} (curves: {curves})")
    return metrics
