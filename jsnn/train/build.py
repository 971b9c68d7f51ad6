"""From a :class:`~jsnn.train.config.Config` to the data set, the model and a whole run:
initialisation from an earlier run (a trained ANN twin, or a spiking run at another T) and the
rounds of Time Inheritance Training."""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jsnn import data, models, surrogate
from jsnn.layers import TDBatchNorm
from jsnn.models import Classifier
from jsnn.train.checkpoint import Checkpointer
from jsnn.train.config import Config, initialize_distributed, parse_args
from jsnn.train.loop import fit
from jsnn.train.mesh import data_mesh, replicate
from jsnn.train.metrics import plot_curves, plot_temperature
from jsnn.train.optim import optimizer
from jsnn.train.step import TrainState

__all__ = ["build_dataset", "build_model", "initialize_from", "main", "stages"]


def build_dataset(config: Config) -> data.Dataset:
    """The data set ``config.dataset``; event sets are binned into ``config.steps`` frames."""
    options = {} if config.augment is None else {"augment": config.augment}
    if config.dataset in data.IMAGE_SETS:
        options.update(autoaugment=config.autoaugment, cutout=config.cutout or False)
    elif config.dataset != "digits":
        options["steps"] = config.steps
    return data.get(config.dataset, data_dir=config.data_dir, **options)


def build_model(config: Config, dataset: data.Dataset) -> Classifier:
    """The model ``config.model`` shaped for ``dataset``, with the configured neurons, norm,
    rematerialisation and compute dtype (or, with ``spiking=False``, its ANN twin)."""
    kwargs = {
        "num_classes": dataset.num_classes,
        "in_channels": dataset.input_shape[-1],
        "remat": config.remat,
        "dtype": jnp.dtype(config.compute_dtype),
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


def initialize_from(model: Classifier, workdir: str | pathlib.Path, dataset: data.Dataset) -> None:
    """Sets ``model`` (in place) to the final state of the finished run in ``workdir``.

    From a run of the model's ANN twin: its weights (:func:`jsnn.models.init_from_ann`; Dspike
    Sec. 5.2 trains the ANN first). From a spiking run of the same model and neurons at any T:
    its whole state, batch statistics and surrogate parameters included (Time Inheritance
    Training, Dspike Sec. 4.4: at a lower T the model then gives exactly the former model's
    outputs over its first T steps).
    """
    workdir = pathlib.Path(workdir)
    if not (workdir / "config.json").exists():
        raise FileNotFoundError(
            f"init_from {str(workdir)!r} is not a run's workdir (no config.json)"
        )
    source_config = Config.from_json((workdir / "config.json").read_text())
    template = TrainState.create(
        build_model(source_config, dataset), optimizer(source_config, steps_per_epoch=1)
    )
    checkpointer = Checkpointer(workdir, keep=source_config.keep_checkpoints)
    try:
        restored = checkpointer.restore(replicate(template, data_mesh()))
    finally:
        checkpointer.close()
    if restored is None or restored[1].get("epoch") != source_config.epochs:
        stopped = "no checkpoint" if restored is None else f"epoch {restored[1].get('epoch')}"
        raise ValueError(
            f"init_from {str(workdir)!r} is not a finished run ({stopped} of "
            f"{source_config.epochs} epochs); run it to the end first"
        )
    source = restored[0].model()
    if not source.spiking:
        models.init_from_ann(model, source)
        return
    if jax.tree.structure(nnx.state(source)) != jax.tree.structure(nnx.state(model)):
        raise ValueError(
            f"init_from {str(workdir)!r} trained a different spiking model "
            f"({source_config.model}, neuron {source_config.neuron!r}); a spiking run "
            f"initialises only the same model and neurons (at any T)"
        )
    nnx.update(model, nnx.state(source))


def stages(config: Config) -> list[Config]:
    """The runs ``config`` asks for, in order: the ANN twin (``ann_init``), then the spiking
    model at ``steps`` and, with ``tit_steps``, one Time Inheritance round per further T (at
    ``tit_epochs`` and ``tit_lr``), each initialised from the run before it, each in its own
    workdir under ``config.workdir`` (``ann``, ``T6``, ``T4``, ...)."""
    if not (config.ann_init or config.tit_steps):
        return [config]
    rounds = (config.steps, *config.tit_steps)
    if len(set(rounds)) != len(rounds):
        raise ValueError(f"steps and tit_steps must all differ, got {rounds}")
    root = pathlib.Path(config.workdir)
    plain = dataclasses.replace(config, ann_init=False, tit_steps=())
    runs = []
    if config.ann_init:
        runs.append(
            dataclasses.replace(plain, spiking=False, method="surrogate", workdir=str(root / "ann"))
        )
    for round_, steps in enumerate(rounds):
        later = {"epochs": config.tit_epochs, "lr": config.tit_lr} if round_ else {}
        runs.append(
            dataclasses.replace(
                plain,
                steps=steps,
                workdir=str(root / f"T{steps}"),
                init_from=runs[-1].workdir if runs else config.init_from,
                **later,
            )
        )
    return runs


def main(
    argv: Sequence[str] | None, recipes: dict[str, Config], *, default: str, description: str
) -> dict[str, float]:
    """A command-line entry point: the recipe with its overrides trained (every run of
    :func:`stages`), evaluated and plotted (``curves.png``, with Dspike's search
    ``temperature.png``, in each run's workdir). Returns the last run's final test metrics."""
    config, cluster = parse_args(argv, recipes, description=description, default=default)
    initialize_distributed(**cluster)
    results = []
    for run in stages(config):
        dataset = build_dataset(run)
        model = build_model(run, dataset)
        if run.init_from is not None:
            initialize_from(model, run.init_from, dataset)
        metrics = fit(run, model, dataset)
        results.append((run, metrics))
        if jax.process_index() == 0:
            plots = [plot_curves(run.workdir)]
            if run.method == "dspike":
                plots.append(plot_temperature(run.workdir))
            print(
                f"{run.workdir}: final test accuracy {metrics['accuracy']:.4f} "
                f"(plots: {', '.join(map(str, plots))})"
            )
    if jax.process_index() == 0 and len(results) > 1:
        print("\n| run | T | epochs | test accuracy |\n|---|---|---|---|")
        for run, metrics in results:
            steps = run.steps if run.spiking else "ANN"
            print(f"| {run.workdir} | {steps} | {run.epochs} | {metrics['accuracy']:.4f} |")
    return results[-1][1]
