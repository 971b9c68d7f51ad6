"""Dspike's finite-difference-gradient (FDG) study (Li et al., NeurIPS 2021, Sec. 4.2, Fig. 2 and
Table 1) on scikit-learn's bundled 8x8 digits instead of MNIST.

    python -m experiments.fdg_study [--workdir runs/fdg_study] [--experiments 1,2,3] ...

The toy model is the zoo's ``fdg_toy``: conv3x3(6, no bias, padding 1) -> ReLU (ANN) or LIF
(decay 0.25, threshold 0.5, the paper's rectangular surrogate with ``a = 1``, i.e.
``Rectangular(1)``: derivative 1 on ``|u - v_th| < 1/2``) -> 2x2 average pooling -> FC(10), no
norm, T = 4 direct-encoded steps for the SNN. Its "first layer" is the input layer's kernel (54
weights; an NNX filter on :func:`jsnn.methods.dspike.searched_path`); its FDG is Eq. 10,
per-element central differences, 108 forward passes (:mod:`jsnn.methods.fdg`). All training is
the library's: :func:`jsnn.train.make_train_step` and :func:`jsnn.train.fit`, Adam or SGD from
:func:`jsnn.train.optimizer` at lr 0.01 cosine-decayed to 0, the data set's batch order.

- Experiment I (Fig. 2a): the ANN trained for 5 epochs (batch 128); before each of the first
  ``--cosine-iterations`` (100) steps of every epoch, the cosine between the true first-layer
  gradient and its FDG at the step's weights and batch, for eps in {0.1, 0.01, 0.001}; the mean
  per epoch. An epoch of the 1437 training digits is 11 steps at batch 128 (the last partial
  batch dropped), so the mean is over min(100, 11) = 11 steps, the whole epoch.
- Experiment II (Fig. 2b): the same for the SNN, its rectangular surrogate gradient.
- Experiment III (Table 1): ``fit`` of the SNN for 10 epochs with the FDG as its gradient
  (``gradient=`` :func:`jsnn.methods.fdg.finite_difference_value_and_grad`) for eps in {0.001,
  0.01, 0.05, 0.1, 0.2, 0.5}, and with the surrogate gradient, from the same initialisation and
  batch order: test accuracy (360 test digits) and train loss per epoch. A control the paper
  lacks: the surrogate run with the first layer's gradient 0 (frozen at its initialisation),
  which shows what the FC learns on its own. Each run has its trainer workdir ``III/<run>``
  (metrics, config, last checkpoint), cleared when the study runs again.

Choices the paper leaves open (measured on a shared 2-core CPU at seed 0, before the study ran
on the library's trainer and its batch order):

- **Optimizer**: not named for the toy; Adam (``--optimizer adam``) by default. The digits give
  55 steps in Experiments I/II and 110 in III (an MNIST epoch alone is 469); the ANN after 5
  epochs / the surrogate SNN after 10 reached 0.86 / 0.88 test accuracy with Adam, 0.08 / 0.13
  with plain SGD (it hardly moves), 0.28 / 0.62 with SGD and momentum 0.9.
- **Precision**: float32; ``--precision float64`` runs the study inside ``jax.enable_x64`` (a
  caller such as the tests keeps its own setting) and costs 1.5-2x the time. At eps = 0.001 the
  ANN's ``1 - cosine`` was 1.2e-5 to 1.1e-6 in float32 and 7.5e-6 to 1.1e-6 in float64: set by
  ReLU's kinks, not rounding (it grows linearly with eps), and the SNN's cosines agreed within
  0.001.
- **FDG scope in Experiment III**: ``--fdg-scope all`` (default, the paper's "FDG as the
  gradient" taken literally) uses the FDG of every parameter, first layer and FC (960 + 10),
  2048 loss evaluations per step; ``first`` the FDG of the first layer and the FC's exact
  gradient (no spike lies between the FC and the loss). Each parameter array is perturbed on
  its own, so ``vmap`` leaves the conv and LIF unbatched for the FC's evaluations: a step cost
  0.27 s with ``all``, 0.20 s with ``first`` (batch 128), the default study about 5 minutes.
- ``--chunk-size`` 6: 9 vmapped chunks of the 54 first-layer weights (no padded repeats, so one
  FDG is exactly the paper's 108 passes); small chunks measured fastest on CPU.

Writes ``results.json`` (the configuration and every number), ``results.md`` (the tables with
the paper's statements; also printed), ``fdg_cosine.png`` (Fig. 2a/b: mean cosine per epoch for
each eps) and ``fdg_training.png`` (Experiment III: test accuracy and train loss per epoch) to
the workdir, and one progress line per epoch. Everything is deterministic given ``--seed``
(initialisation and batch order). ``--train-size``, ``--batch-size`` and the epoch counts shrink
the study for tests; ``--help`` lists every option.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jsnn import data, losses, models, train
from jsnn.data.digits import ArrayPairs
from jsnn.methods import dspike, fdg

PAPER = {
    "ann": "> 0.99 for every eps (Fig. 2a)",
    "snn": {
        0.1: "> 0.8 (Fig. 2b)",
        0.01: "lower than at 0.1",
        0.001: "about 0 (nearly 90 degrees)",
    },
    "surrogate_accuracy": "94.9% (MNIST, 10 epochs)",
    "best_eps": 0.1,
}
SCOPES = {
    "all": "every parameter (first layer and FC)",
    "first": "first layer; exact gradient for the FC",
}
LOSS = losses.mean_output_cross_entropy


def positive_floats(text: str) -> tuple[float, ...]:
    """An argparse type: comma-separated positive numbers, e.g. ``0.1,0.01``."""
    try:
        values = tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from error
    if not values or any(not np.isfinite(v) or v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _experiments(text: str) -> tuple[int, ...]:
    chosen = tuple(sorted({int(item) for item in text.split(",") if item.strip()}))
    if not chosen or not set(chosen) <= {1, 2, 3}:
        raise argparse.ArgumentTypeError(f"expected a subset of 1,2,3, got {text!r}")
    return chosen


OPTIONS = (  # flag, type or choices, default, help
    ("workdir", str, "runs/fdg_study", "where the results are written"),
    ("experiments", _experiments, "1,2,3", "which of 1,2,3 to run"),
    ("cosine-epochs", int, 5, "epochs of Experiments I and II"),
    ("train-epochs", int, 10, "epochs of Experiment III"),
    ("batch-size", int, 128, "the last partial batch is dropped"),
    ("lr", float, 0.01, "initial learning rate, cosine-decayed to 0"),
    ("optimizer", ("adam", "sgd"), "adam", "see the docstring"),
    ("momentum", float, 0.0, "SGD momentum (--optimizer sgd only)"),
    ("cosine-eps", positive_floats, "0.1,0.01,0.001", "eps of Experiments I and II"),
    ("train-eps", positive_floats, "0.001,0.01,0.05,0.1,0.2,0.5", "eps of Experiment III"),
    ("cosine-iterations", int, 100, "steps at the start of each epoch whose cosines are averaged"),
    ("T", int, 4, "time steps of the SNN (direct encoding)"),
    ("seed", int, 0, "initialisation and batch order"),
    ("precision", ("float32", "float64"), "float32", "float64 runs under jax.enable_x64"),
    ("fdg-scope", tuple(SCOPES), "all", "Exp. III: FDG of every parameter, or of the first layer"),
    ("chunk-size", int, 6, "perturbations per vmapped FDG call (6 divides the 54 weights)"),
    ("train-size", int, 0, "use the first N training digits (0: all)"),
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.fdg_study",
        description=" ".join(__doc__.split("\n")[:2]),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for flag, kind, default, help_ in OPTIONS:
        typed = {"choices": kind} if isinstance(kind, tuple) else {"type": kind}
        parser.add_argument(f"--{flag}", default=default, help=help_, **typed)
    args = parser.parse_args(argv)
    for name in ("cosine_epochs", "train_epochs", "batch_size", "cosine_iterations", "T"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.lr <= 0 or args.chunk_size < 1 or args.train_size < 0 or not 0 <= args.momentum < 1:
        parser.error("--lr, --chunk-size must be positive, --train-size >= 0, --momentum in [0, 1)")
    return args


# ----------------------------------------------------------------------------------------------
# The toy, its first layer, and the gradients of Experiment III


def toy(args: argparse.Namespace, *, spiking: bool) -> models.Classifier:
    rngs = nnx.Rngs(args.seed)
    if spiking:
        return models.get("fdg_toy", steps=args.T, rngs=rngs)
    return models.ann_twin("fdg_toy", rngs=rngs)


def first_layer(model: nnx.Module) -> Callable:
    """The NNX filter of the paper's "first layer": the kernel of ``model.input_layer()``."""
    prefix = dspike.searched_path(model)
    return lambda path, value: tuple(path[: len(prefix)]) == prefix


def first_layer_loss(model: nnx.Module, batch: dict) -> tuple[Callable, nnx.State]:
    """``(loss, w)``: the training loss on ``batch`` as a function of the first layer's kernel
    (an ``nnx.State``), and its current value; ``model`` is not changed."""
    graphdef, weights, params, rest = nnx.split(model, first_layer(model), nnx.Param, ...)

    def loss(w: nnx.State) -> jax.Array:
        return losses.batch_loss(nnx.merge(graphdef, w, params, rest, copy=True), batch, LOSS)[0]

    return loss, weights


def frozen_first_layer(select: Callable) -> train.Gradient:
    """Autodiff, with the gradient of the parameters ``select`` picks set to 0."""

    def gradient(f, params):
        (value, aux), grads = train.value_and_grad(f, params)
        chosen, others = nnx.split_state(grads, select, ...)
        return (value, aux), nnx.merge_state(jax.tree.map(jnp.zeros_like, chosen), others)

    return gradient


def gradients(args: argparse.Namespace) -> dict[str, Callable]:
    """Experiment III's runs, each its workdir's name -> (label, ``model -> trainer gradient``)."""

    def fdg_of(eps):
        def gradient(model):
            select = None if args.fdg_scope == "all" else first_layer(model)
            return fdg.finite_difference_value_and_grad(
                eps=eps, chunk_size=args.chunk_size, select=select
            )

        return gradient

    runs = {
        "surrogate": ("III: rectangular SG", lambda model: train.value_and_grad),
        "frozen_first_layer": (
            "III: first layer frozen",
            lambda m: frozen_first_layer(first_layer(m)),
        ),
    }
    fdgs = {f"fdg_eps{eps:g}": (f"III: FDG eps={eps:g}", fdg_of(eps)) for eps in args.train_eps}
    return runs | fdgs


# ----------------------------------------------------------------------------------------------
# Runs


def _train_config(args, epochs: int, steps: int, workdir: Path | None = None) -> train.TrainConfig:
    return train.TrainConfig(
        epochs=epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        compute_dtype=args.precision,
        seed=args.seed,
        workdir=str(workdir),
        log_every=steps,  # one train record per epoch: the epoch's mean loss
        checkpoint_every=epochs * steps + 1,  # at epoch ends only
        keep_checkpoints=1,
        progress=False,
        tensorboard=False,
    )


def cosine_run(label: str, args, dataset: data.Dataset, *, spiking: bool) -> dict:
    """Experiments I and II: the library's train step on the toy; before each of the first
    ``--cosine-iterations`` steps of an epoch, the cosine of the first layer's gradient with its
    FDG at the step's weights and batch, for each eps of ``--cosine-eps``."""
    model, steps = toy(args, spiking=spiking), dataset.steps_per_epoch(args.batch_size)
    config = _train_config(args, args.cosine_epochs, steps)
    dtype, tx = jnp.dtype(args.precision), train.optimizer(config, steps)
    mesh = train.data_mesh(jax.devices()[:1])

    def cast(tree):  # a float64 study: the state and the data, as fit casts them
        floating = lambda x: jnp.issubdtype(x.dtype, jnp.floating)  # noqa: E731
        return jax.tree.map(lambda x: x.astype(dtype) if floating(x) else x, tree)

    state = train.replicate(cast(train.TrainState.create(model, tx)), mesh)
    step = train.make_train_step(tx, LOSS, platform=mesh.devices.flat[0].platform)
    evaluate = jax.jit(functools.partial(train.eval_step, loss=LOSS))

    @jax.jit
    def cosines(state: train.TrainState, batch: dict) -> jax.Array:
        loss, w = first_layer_loss(state.model(), batch)
        gradient, chunk = jax.grad(loss)(w), args.chunk_size
        fdgs = [
            fdg.finite_difference_gradient(loss, w, eps=e, chunk_size=chunk)
            for e in args.cosine_eps
        ]
        return jnp.stack([fdg.cosine_similarity(gradient, estimate) for estimate in fdgs])

    batches = dataset.train(batch_size=args.batch_size, seed=args.seed)
    history = {
        "train_loss": [],
        "test_accuracy": [],
        "cosine": {_key(e): [] for e in args.cosine_eps},
    }
    start = time.perf_counter()
    for epoch in range(args.cosine_epochs):
        step_losses, measured = [], []
        for i in range(steps):
            batch = train.shard_batch(cast(batches[epoch * steps + i]), mesh)
            if i < args.cosine_iterations:
                measured.append(cosines(state, batch))
            state, metrics = step(state, batch)
            step_losses.append(metrics["loss"])
        test = map(cast, dataset.test(batch_size=args.batch_size))
        history["train_loss"].append(float(np.mean(jax.device_get(step_losses))))
        history["test_accuracy"].append(train.evaluate(state, test, mesh, evaluate)["accuracy"])
        means = np.mean(jax.device_get(measured), axis=0)
        for eps, value in zip(args.cosine_eps, means, strict=True):
            history["cosine"][_key(eps)].append(float(value))
        shown = ", ".join(f"{e:g}: {v:.4f}" for e, v in zip(args.cosine_eps, means, strict=True))
        print(
            f"[{label}] epoch {epoch + 1}/{args.cosine_epochs}: train loss "
            f"{history['train_loss'][-1]:.4f}, test accuracy {history['test_accuracy'][-1]:.4f}, "
            f"mean cosine over {len(measured)} iterations (eps {shown}) "
            f"[{time.perf_counter() - start:.1f}s]",
            flush=True,
        )
    history["cosine_mean"] = {key: float(np.mean(v)) for key, v in history["cosine"].items()}
    return _finish(history, start)


def fit_run(label: str, args, dataset: data.Dataset, workdir: Path, gradient: Callable) -> dict:
    """Experiment III: :func:`jsnn.train.fit` of a fresh toy SNN in ``workdir`` with the
    trainer gradient ``gradient(model)``; the train loss and test accuracy of every epoch."""
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh run, not a resumed one
    model, steps = toy(args, spiking=True), dataset.steps_per_epoch(args.batch_size)
    print(f"[{label}] training in {workdir}", flush=True)
    start = time.perf_counter()
    config = _train_config(args, args.train_epochs, steps, workdir)
    train.fit(
        config, model, dataset, loss=LOSS, gradient=gradient(model), devices=jax.devices()[:1]
    )
    records = train.read_metrics(workdir / "metrics.jsonl")
    history = {
        "train_loss": [r["loss"] for r in records if r["kind"] == "train"],
        "test_accuracy": [r["accuracy"] for r in records if r["kind"] == "eval"],
    }
    history = _finish(history, start)
    return {**history, "seconds_per_step": history["seconds"] / (args.train_epochs * steps)}


def _finish(history: dict, start: float) -> dict:
    seconds = time.perf_counter() - start
    return {**history, "final_test_accuracy": history["test_accuracy"][-1], "seconds": seconds}


def _key(eps: float) -> str:
    return f"{eps:g}"


# ----------------------------------------------------------------------------------------------
# Report


def _cosine_rows(name: str, result: dict, args, paper) -> list[str]:
    rows = []
    for eps in args.cosine_eps:
        cells = " | ".join(f"{v:.4f}" for v in result["cosine"][_key(eps)])
        statement = paper if isinstance(paper, str) else paper.get(eps, "")
        mean = result["cosine_mean"][_key(eps)]
        rows.append(f"| {name} | {eps:g} | {cells} | **{mean:.4f}** | {statement} |")
    return rows


def _training_row(name: str, eps: str, run: dict, paper: str, bold: bool = True) -> str:
    final = f"{run['final_test_accuracy']:.4f}"
    return (
        f"| {name} | {eps} | {f'**{final}**' if bold else final} | "
        f"{max(run['test_accuracy']):.4f} | {run['train_loss'][-1]:.4f} | {paper} |"
    )


def markdown(results: dict, args: argparse.Namespace) -> str:
    iterations = results["iterations_per_epoch"]
    lines = [
        "# Dspike's FDG study (Sec. 4.2) on scikit-learn's digits",
        "",
        f"Toy model `fdg_toy` (conv3x3(6)-ReLU/LIF-avgpool2-FC, no norm), T = {args.T}, batch "
        f"{args.batch_size}, {results['config']['optimizer']} at lr {args.lr:g} cosine-decayed "
        f"to 0, {args.precision}, seed {args.seed}; {iterations} iterations per epoch "
        f"({results['train_size']} training digits, last partial batch dropped), "
        f"{results['test_size']} test digits.",
        "",
    ]
    if "ann" in results or "snn" in results:
        header = " | ".join(f"epoch {e + 1}" for e in range(args.cosine_epochs))
        lines += [
            "## Experiments I and II: cosine(gradient, FDG) of the first layer (Fig. 2)",
            "",
            f"Mean over the first min({args.cosine_iterations}, {iterations}) = "
            f"{results['cosine_iterations_per_epoch']} iterations of each epoch (the paper: the "
            f"first 100 of an MNIST epoch).",
            "",
            f"| model | eps | {header} | mean | paper (MNIST) |",
            "|---|---|" + "---|" * args.cosine_epochs + "---|---|",
        ]
        for key, name in (
            ("ann", "I: ANN, true gradient"),
            ("snn", "II: SNN, rectangular SG (a = 1)"),
        ):
            if key in results:
                lines += _cosine_rows(name, results[key], args, PAPER[key])
        lines.append("")
    if "training" in results:
        training = results["training"]
        surrogate, frozen = training["surrogate"], training["frozen_first_layer"]
        lines += [
            f"## Experiment III: training the SNN for {args.train_epochs} epochs (Table 1)",
            "",
            f"FDG scope: {SCOPES[args.fdg_scope]}.",
            "",
            "| gradient | eps | final test accuracy | best epoch's accuracy | final train loss "
            "| paper (MNIST) |",
            "|---|---|---|---|---|---|",
            _training_row("rectangular SG (a = 1)", "-", surrogate, PAPER["surrogate_accuracy"]),
            _training_row(
                "none for the first layer (frozen at init), exact FC gradient",
                "-",
                frozen,
                "(a control, not in the paper)",
                bold=False,
            ),
        ]
        for eps in args.train_eps:
            paper = "best (0.1 in the paper)" if eps == PAPER["best_eps"] else ""
            lines.append(_training_row("FDG", f"{eps:g}", training["fdg"][_key(eps)], paper))
        runs = [surrogate, *(training["fdg"][_key(eps)] for eps in args.train_eps)]
        accuracies = [run["final_test_accuracy"] for run in runs]
        spread = round((max(accuracies) - min(accuracies)) * results["test_size"])
        lines += [
            "",
            f"Best FDG eps by final test accuracy: {training['best_fdg_eps']:g}; by final train "
            f"loss: {training['lowest_loss_fdg_eps']:g} (paper: {PAPER['best_eps']:g}, by test "
            f"accuracy). The surrogate and FDG runs end within {spread} test digits of each "
            f"other; the control with a frozen first layer ends at "
            f"{frozen['final_test_accuracy']:.4f}.",
            "",
        ]
    lines.append(f"Wall time: {results['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def _save(path: Path, panels: list[tuple[dict, list[tuple[str, list[float], str]]]]) -> None:
    """One row of panels, each ``(axis settings, [(label, values per epoch, style)])``, saved
    through the Agg canvas: no pyplot, so a notebook's backend and figures stay as they are."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(5 * len(panels), 4))
    FigureCanvasAgg(figure)
    for axis, (settings, lines) in zip(
        figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True
    ):
        for label, values, style in lines:
            axis.plot(range(1, len(values) + 1), values, style, label=label)
        axis.set(xlabel="epoch", **settings)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _all(result: dict) -> list[float]:
    return [value for values in result["cosine"].values() for value in values]


def _plot(results: dict, args: argparse.Namespace, workdir: Path) -> None:
    titles = {"ann": "(a) ANN: true gradient vs FDG", "snn": "(b) SNN: rectangular SG vs FDG"}
    low = min([-0.05, *(v - 0.05 for k in titles if k in results for v in _all(results[k]))])
    cosine = [
        (
            {"title": title, "ylabel": "cosine similarity", "ylim": (low, 1.05)},
            [(f"eps = {e:g}", results[key]["cosine"][_key(e)], "o-") for e in args.cosine_eps],
        )
        for key, title in titles.items()
        if key in results
    ]
    if cosine:
        _save(workdir / "fdg_cosine.png", cosine)
    if "training" in results:
        training = results["training"]
        runs = [(f"FDG, eps = {e:g}", training["fdg"][_key(e)], ".-") for e in args.train_eps]
        runs += [
            ("rectangular SG (a = 1)", training["surrogate"], "k.--"),
            ("first layer frozen", training["frozen_first_layer"], "k.:"),
        ]
        panels = [
            (
                {
                    "title": "Experiment III: test accuracy",
                    "ylabel": "test accuracy",
                    "ylim": (0, 1),
                },
                "test_accuracy",
            ),
            (
                {"title": "Experiment III: mean train loss of the epoch", "ylabel": "train loss"},
                "train_loss",
            ),
        ]
        lines = [
            (settings, [(name, run[key], style) for name, run, style in runs])
            for settings, key in panels
        ]
        _save(workdir / "fdg_training.png", lines)


def main(argv: Sequence[str] | None = None) -> dict:
    """Runs the chosen experiments; writes and returns the results (see the module docstring)."""
    args = parse_args(argv)
    with jax.enable_x64(args.precision == "float64"):
        return _study(args)


def _study(args: argparse.Namespace) -> dict:
    start, workdir = time.perf_counter(), Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    dataset = data.get("digits")
    if args.train_size:
        source = dataset.train_source
        subset = ArrayPairs(source.inputs[: args.train_size], source.labels[: args.train_size])
        dataset = dataclasses.replace(dataset, train_source=subset)
    if args.batch_size > dataset.num_train:
        raise ValueError(
            f"--batch-size {args.batch_size} exceeds the {dataset.num_train} training digits"
        )
    config = dict(vars(args))
    if args.optimizer == "sgd" and args.momentum:
        config["optimizer"] = f"sgd (momentum {args.momentum:g})"
    iterations = dataset.steps_per_epoch(args.batch_size)
    measured = min(args.cosine_iterations, iterations)
    results: dict = {
        "config": config,
        "train_size": dataset.num_train,
        "test_size": dataset.num_test,
        "iterations_per_epoch": iterations,
        "cosine_iterations_per_epoch": measured,
    }
    print(
        f"FDG study: {iterations} iterations per epoch; cosines averaged over the first "
        f"{measured} of each epoch; {args.precision}, {args.optimizer}",
        flush=True,
    )
    for number, key, spiking, label in ((1, "ann", False, "I: ANN"), (2, "snn", True, "II: SNN")):
        if number in args.experiments:
            results[key] = cosine_run(label, args, dataset, spiking=spiking)
    if 3 in args.experiments:
        runs = {
            name: fit_run(label, args, dataset, workdir / "III" / name, gradient)
            for name, (label, gradient) in gradients(args).items()
        }
        fdgs = {eps: runs.pop(f"fdg_eps{eps:g}") for eps in args.train_eps}
        training = {**runs, "fdg": {_key(eps): run for eps, run in fdgs.items()}}
        training["best_fdg_eps"] = max(fdgs, key=lambda e: fdgs[e]["final_test_accuracy"])
        training["lowest_loss_fdg_eps"] = min(fdgs, key=lambda e: fdgs[e]["train_loss"][-1])
        results["training"] = training
    results["seconds"] = time.perf_counter() - start
    results["paper"] = {**PAPER, "snn": {_key(e): text for e, text in PAPER["snn"].items()}}
    table = markdown(results, args)
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (workdir / "results.md").write_text(table)
    _plot(results, args, workdir)
    print(table, flush=True)
    print(f"wrote results.json, results.md and the figures to {workdir}", flush=True)
    return results


if __name__ == "__main__":
    main()
