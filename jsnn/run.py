"""From a :class:`~jsnn.config.Config` to a whole run: the data set, the model, the method's
parts, the trainer, and the plots; initialisation from earlier runs (a trained ANN twin, or a
spiking run at another T) and the rounds of Time Inheritance Training.

This is the one place where a config meets the data, the zoo, the methods and the trainer.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jsnn import data, models
from jsnn.config import Config, parse_args
from jsnn.methods.surrogate import PlainSurrogate
from jsnn.train import TrainState, data_mesh, fit, initialize_distributed, optimizer, replicate
from jsnn.train.checkpoint import Checkpointer
from jsnn.train.metrics import plot_curves

__all__ = ["build_dataset", "build_model", "initialize_from", "main", "run", "stages"]


def build_dataset(config: Config) -> data.Dataset:
    """The data set ``config.data.name``; event sets are binned into ``model.time_steps``
    frames."""
    section = config.data
    options = {} if section.augment is None else {"augment": section.augment}
    if section.name in data.IMAGE_SETS:
        options.update(autoaugment=section.autoaugment, cutout=section.cutout or False)
    elif section.name != "digits":
        options["steps"] = config.model.time_steps
    return data.get(section.name, data_dir=section.data_dir, **options)


def build_model(config: Config, dataset: data.Dataset) -> nnx.Module:
    """The model ``config.model.name`` shaped for ``dataset``, with the configured neurons
    (as the method changes them), norm, rematerialisation and compute dtype (or, with
    ``model.spiking`` false, its ANN twin); or the method's own model, if it builds one."""
    own = config.method.model(config, dataset)
    if own is not None:
        return own
    section = config.model
    kwargs = {
        "num_classes": dataset.num_classes,
        "in_channels": dataset.input_shape[-1],
        "remat": section.remat,
        "dtype": jnp.dtype(config.train.compute_dtype),
        "rngs": nnx.Rngs(config.train.seed),
    }
    if not section.spiking:
        return models.ann_twin(section.name, **kwargs)
    return models.get(
        section.name,
        steps=section.time_steps,
        neuron=config.method.neurons(config, section.neuron_factory()),
        norm=models.norm_factory(section.norm, v_th=section.v_th),
        **kwargs,
    )


def initialize_from(
    model: models.Classifier, workdir: str | pathlib.Path, dataset: data.Dataset
) -> None:
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
            f"init.from_workdir {str(workdir)!r} is not a run's workdir (no config.json)"
        )
    source_config = Config.from_json((workdir / "config.json").read_text())
    template = TrainState.create(
        build_model(source_config, dataset), optimizer(source_config.train, steps_per_epoch=1)
    )
    checkpointer = Checkpointer(workdir, keep=source_config.train.keep_checkpoints)
    try:
        restored = checkpointer.restore(replicate(template, data_mesh()))
    finally:
        checkpointer.close()
    epochs = source_config.train.epochs
    if restored is None or restored[1].get("epoch") != epochs:
        stopped = "no checkpoint" if restored is None else f"epoch {restored[1].get('epoch')}"
        raise ValueError(
            f"init.from_workdir {str(workdir)!r} is not a finished run ({stopped} of "
            f"{epochs} epochs); run it to the end first"
        )
    source = restored[0].model()
    if not source.spiking:
        models.init_from_ann(model, source)
        return
    if jax.tree.structure(nnx.state(source)) != jax.tree.structure(nnx.state(model)):
        raise ValueError(
            f"init.from_workdir {str(workdir)!r} trained a different spiking model "
            f"({source_config.model.name}, neuron {source_config.model.neuron!r}); a spiking "
            f"run initialises only the same model and neurons (at any T)"
        )
    nnx.update(model, nnx.state(source))


def stages(config: Config) -> list[Config]:
    """The runs ``config`` asks for, in order: the ANN twin (``init.ann``, plain surrogate
    training of the twin), then the spiking model at ``model.time_steps`` and, with
    ``init.tit_steps``, one Time Inheritance round per further T (at ``init.tit_epochs`` and
    ``init.tit_lr``), each initialised from the run before it, each in its own workdir under
    ``train.workdir`` (``ann``, ``T6``, ``T4``, ...)."""
    init = config.init
    if not (init.ann or init.tit_steps):
        return [config]
    root = pathlib.Path(config.train.workdir)
    plain = dataclasses.replace(config, init=dataclasses.replace(init, ann=False, tit_steps=()))
    runs = []
    if init.ann:
        runs.append(
            dataclasses.replace(
                plain,
                model=dataclasses.replace(config.model, spiking=False),
                train=dataclasses.replace(config.train, workdir=str(root / "ann")),
                method=PlainSurrogate(),
            )
        )
    for round_, steps in enumerate((config.model.time_steps, *init.tit_steps)):
        train = {"workdir": str(root / f"T{steps}")}
        if round_:
            train.update(epochs=init.tit_epochs, lr=init.tit_lr)
        runs.append(
            dataclasses.replace(
                plain,
                model=dataclasses.replace(config.model, time_steps=steps),
                train=dataclasses.replace(config.train, **train),
                init=dataclasses.replace(
                    plain.init,
                    from_workdir=runs[-1].train.workdir if runs else init.from_workdir,
                ),
            )
        )
    return runs


def run(
    config: Config, *, dataset: data.Dataset | None = None, devices: list | None = None
) -> dict[str, float]:
    """Trains one stage of :func:`stages` (a config without ``init.ann`` or
    ``init.tit_steps``): builds the data (unless ``dataset`` is given) and the model,
    initialises it from ``init.from_workdir``, trains it with the method's hooks and loss, and
    writes the plots (``curves.png`` and the method's). Returns the final test metrics."""
    if config.init.ann or config.init.tit_steps:
        raise ValueError("run trains one stage; call it on each of stages(config)")
    dataset = build_dataset(config) if dataset is None else dataset
    model = build_model(config, dataset)
    if config.init.from_workdir is not None:
        initialize_from(model, config.init.from_workdir, dataset)
    method = config.method
    metrics = fit(
        config.train,
        model,
        dataset,
        loss=method.loss(config),
        epoch_start=method.epoch_start(model, config),
        epoch_end=method.epoch_end(model, config),
        devices=devices,
        record=config.to_dict(),
    )
    if jax.process_index() == 0:
        workdir = pathlib.Path(config.train.workdir)
        plots = [plot_curves(workdir), *method.plots(workdir)]
        print(
            f"{workdir}: final test accuracy {metrics['accuracy']:.4f} "
            f"(plots: {', '.join(map(str, plots))})"
        )
    return metrics


def main(
    argv: Sequence[str] | None,
    recipes: Mapping[str, Config],
    *,
    default: str,
    description: str,
) -> dict[str, float]:
    """A command-line entry point: the recipe with its overrides trained (every run of
    :func:`stages`), evaluated and plotted. Returns the last run's final test metrics."""
    config, cluster = parse_args(argv, recipes, description=description, default=default)
    initialize_distributed(**cluster)
    results = [(stage, run(stage)) for stage in stages(config)]
    if jax.process_index() == 0 and len(results) > 1:
        print("\n| run | T | epochs | test accuracy |\n|---|---|---|---|")
        for stage, metrics in results:
            steps = stage.model.time_steps if stage.model.spiking else "ANN"
            workdir, epochs = stage.train.workdir, stage.train.epochs
            print(f"| {workdir} | {steps} | {epochs} | {metrics['accuracy']:.4f} |")
    return results[-1][1]
