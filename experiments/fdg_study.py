"""Dspike's finite-difference-gradient (FDG) study (Li et al., NeurIPS 2021, Sec. 4.2, Fig. 2 and
Table 1) on scikit-learn's bundled 8x8 digits instead of MNIST.

    python -m experiments.fdg_study [--workdir runs/fdg_study] [--experiments 1,2,3] ...

The toy model is the zoo's ``fdg_toy``: conv3x3(6, no bias, padding 1) -> ReLU (ANN) or LIF
(decay 0.25, threshold 0.5, the paper's rectangular surrogate with ``a = 1``, i.e.
``Rectangular(1)``: derivative 1 on ``|u - v_th| < 1/2``) -> 2x2 average pooling -> FC(10), no
norm, T = 4 direct-encoded steps for the SNN. The FDG of the first layer is Eq. 10, per-element
central differences over its 54 weights (108 forward passes), computed with
:func:`jsnn.methods.fdg.finite_difference_gradient` and compared with
:func:`jsnn.methods.fdg.cosine_similarity`.

- Experiment I (Fig. 2a): train the ANN for 5 epochs (batch 128, lr 0.01 cosine-decayed to 0);
  at each of the first ``--cosine-iterations`` (100) iterations of every epoch, the cosine
  between the true first-layer gradient and its FDG at the same weights and batch, for eps in
  {0.1, 0.01, 0.001}; the mean per epoch. The digits have 1437 training images, so an epoch at
  batch 128 is only 11 iterations (the last partial batch is dropped): the mean is over
  min(100, 11) = 11 iterations, i.e. every iteration of the epoch.
- Experiment II (Fig. 2b): the same for the SNN, its rectangular surrogate gradient against the
  FDG.
- Experiment III (Table 1): train the SNN for 10 epochs with the FDG itself as the gradient, for
  eps in {0.001, 0.01, 0.05, 0.1, 0.2, 0.5}, and with the rectangular surrogate gradient, from
  the same initialisation and batch order; the test accuracy (360 test digits) and the train
  loss per epoch.

Choices the paper leaves open, and why (timings on a shared 2-core CPU):

- **Optimizer**: not named for the toy. The default is Adam (``--optimizer adam``) at the
  paper's lr 0.01, cosine-decayed to 0. The digits give only 55 steps in Experiments I/II and
  110 in III (an MNIST epoch alone is 469), and measured at seed 0 the test accuracy of the ANN
  after 5 epochs / of the surrogate-trained SNN after 10 is 0.86 / 0.88 with Adam, 0.08 / 0.13
  with plain SGD (``--optimizer sgd``: it hardly moves), 0.28 / 0.62 with SGD and momentum 0.9.
- **Precision**: float32 (``--precision float64`` runs the whole study inside a
  ``jax.enable_x64`` context, rather than ``jax.config.update``, so that a caller such as the
  tests keeps its own setting). Rounding would matter if the two losses at
  ``w +/- 0.001 e_i`` differed by little more than float32's ~1e-7 relative error; measured,
  they do not: at eps = 0.001 the ANN's ``1 - cosine`` is 1.2e-5 (first epoch) to 1.1e-6 in
  float32 and 7.5e-6 to 1.1e-6 in float64. It is set by ReLU's kinks, not by rounding (it
  grows linearly with eps: about 6e-4, 7e-5 and 8e-6 at 0.1, 0.01 and 0.001), and the SNN's
  cosines agree within 0.001 (epoch 1 at eps 0.1: 0.7943 in float32, 0.7942 in float64).
  float64 costs 1.5-2x the time.
- **FDG scope in Experiment III**: ``--fdg-scope all`` (default) replaces the gradient of every
  parameter by its FDG, first layer (54 weights) and FC (960 + 10) alike, 2048 loss
  evaluations per step; ``--fdg-scope first`` uses the FDG of the first layer and the exact
  gradient of the FC (no spike lies between the FC and the loss, so its gradient is exact
  and its FDG differs from it only by the loss's curvature over eps). A perturbation of the
  FC does not reach the conv and LIF, which ``vmap`` then leaves unbatched, so the FC's 1940
  evaluations are cheap: measured (float32, batch 128), a step costs 0.27 s with ``all`` and
  0.20 s with ``first``, and the whole default study takes about 5 minutes with ``all``,
  inside the 15-minute budget. So the default is ``all``, the paper's "FDG as the gradient"
  taken literally. Experiment III also trains a control the paper does not have: the
  surrogate run with the first layer's gradient set to 0 (frozen at its initialisation),
  which shows how much the FC layer learns on its own.
- ``--chunk-size`` 6: 9 vmapped chunks of the 54 first-layer weights (no padded repeats, so
  one FDG is exactly the paper's 108 forward passes); small chunks measured fastest on CPU.

Writes to the workdir: ``results.json`` (the configuration and every number), ``results.md``
(the tables, with the paper's statements next to ours; also printed at the end),
``fdg_cosine.png`` (Fig. 2a/b: mean cosine per epoch for each eps, ANN and SNN panels) and
``fdg_training.png`` (Experiment III: test accuracy and train loss per epoch for each eps, the
surrogate and the control). Progress is printed one line per epoch. Everything is
deterministic given ``--seed`` (initialisation and batch order). ``--help`` lists every
option; ``--train-size``, ``--batch-size`` and the epoch counts shrink the study for tests.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jsnn import models
from jsnn.data import load_digits
from jsnn.losses import mean_output_cross_entropy
from jsnn.methods.fdg import cosine_similarity, finite_difference_gradient

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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.fdg_study",
        description=__doc__.split("\n")[0] + " " + __doc__.split("\n")[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--workdir", default="runs/fdg_study", help="where the results are written")
    add("--experiments", type=_experiments, default="1,2,3", help="which of 1,2,3 to run")
    add("--cosine-epochs", type=int, default=5, help="epochs of Experiments I and II")
    add("--train-epochs", type=int, default=10, help="epochs of Experiment III")
    add("--batch-size", type=int, default=128, help="the last partial batch is dropped")
    add("--lr", type=float, default=0.01, help="initial learning rate, cosine-decayed to 0")
    add("--optimizer", choices=("adam", "sgd"), default="adam", help="see the docstring")
    add("--momentum", type=float, default=0.0, help="SGD momentum (--optimizer sgd only)")
    add("--cosine-eps", type=positive_floats, default="0.1,0.01,0.001", help="eps of Exp. I and II")
    add(
        "--train-eps",
        type=positive_floats,
        default="0.001,0.01,0.05,0.1,0.2,0.5",
        help="eps of Experiment III",
    )
    add(
        "--cosine-iterations",
        type=int,
        default=100,
        help="iterations at the start of each epoch whose cosines are averaged",
    )
    add("--T", type=int, default=4, help="time steps of the SNN (direct encoding)")
    add("--seed", type=int, default=0, help="initialisation and batch order")
    add(
        "--precision",
        choices=("float32", "float64"),
        default="float32",
        help="float64 runs under jax.enable_x64",
    )
    add(
        "--fdg-scope",
        choices=("all", "first"),
        default="all",
        help="Exp. III: FDG for every parameter, or for the first layer with the exact FC gradient",
    )
    add(
        "--chunk-size",
        type=int,
        default=6,
        help="perturbations per vmapped FDG call (6 divides the 54 first-layer weights)",
    )
    add("--train-size", type=int, default=0, help="use the first N training digits (0: all)")
    args = parser.parse_args(argv)
    for name in ("cosine_epochs", "train_epochs", "batch_size", "cosine_iterations", "T"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.lr <= 0 or args.chunk_size < 1 or args.train_size < 0:
        parser.error("--lr and --chunk-size must be positive, --train-size >= 0")
    return args


class Toy:
    """The toy model as pure functions of its parameters (an ``nnx.State`` of ``nnx.Param``)."""

    def __init__(self, *, spiking: bool, steps: int, seed: int, dtype):
        rngs = nnx.Rngs(seed)
        if spiking:
            model = models.get("fdg_toy", steps=steps, rngs=rngs)
        else:
            model = models.ann_twin("fdg_toy", rngs=rngs)
        self.spiking = spiking
        self.graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def cast(x):
            return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

        self.initial_params = jax.tree.map(cast, params)
        self.rest = jax.tree.map(cast, rest)

    def model(self, params) -> models.Classifier:
        return nnx.merge(self.graphdef, params, self.rest)

    def outputs(self, params, x: jax.Array) -> jax.Array:
        """``[B, T, classes]``; the ANN's ``[B, classes]`` as one step."""
        out = self.model(params)(x)
        return out if out.ndim == 3 else out[:, None]

    def loss(self, params, x: jax.Array, labels: jax.Array) -> jax.Array:
        return mean_output_cross_entropy(self.outputs(params, x), labels)

    def first_layer(self, tree) -> jax.Array:
        """The input layer's kernel in a parameter-shaped tree (parameters or gradients)."""
        return self.model(tree).input_layer().kernel.get_value()

    def with_first_layer(self, tree, kernel: jax.Array):
        """A copy of ``tree`` with ``kernel`` as the input layer's kernel (``tree`` unchanged)."""
        model = self.model(jax.tree.map(lambda x: x, tree))  # fresh Variables, in this trace
        model.input_layer().kernel.set_value(kernel)
        return nnx.state(model, nnx.Param)

    def first_layer_loss(self, params, x, labels) -> Callable[[jax.Array], jax.Array]:
        """``w -> L(w)``: the loss on one batch as a function of the first layer's weights."""
        return lambda kernel: self.loss(self.with_first_layer(params, kernel), x, labels)

    def fdg(self, params, x, labels, *, eps: float, chunk_size: int, scope: str):
        """Eq. 10 as a parameter-shaped tree: every parameter's FDG (``scope="all"``), or the
        first layer's FDG and the exact gradient elsewhere (``scope="first"``)."""
        if scope == "first":
            grads = jax.grad(self.loss)(params, x, labels)
            kernel = finite_difference_gradient(
                self.first_layer_loss(params, x, labels),
                self.first_layer(params),
                eps=eps,
                chunk_size=chunk_size,
            )
            return self.with_first_layer(grads, kernel)
        leaves, treedef = jax.tree.flatten(params)
        differences = []
        for index, leaf in enumerate(leaves):

            def loss(w, index=index):
                replaced = [w if i == index else other for i, other in enumerate(leaves)]
                return self.loss(jax.tree.unflatten(treedef, replaced), x, labels)

            differences.append(
                finite_difference_gradient(loss, leaf, eps=eps, chunk_size=chunk_size)
            )
        return jax.tree.unflatten(treedef, differences)


def _optimizer(args: argparse.Namespace, total_steps: int) -> optax.GradientTransformation:
    schedule = optax.cosine_decay_schedule(args.lr, decay_steps=total_steps)
    if args.optimizer == "adam":
        return optax.adam(schedule)
    return optax.sgd(schedule, momentum=args.momentum or None)


class Trainer:
    """Jitted steps of one toy model: exact/surrogate steps, with or without the FDG cosines,
    and FDG steps; the batch order is fixed by the seed."""

    def __init__(self, toy: Toy, args: argparse.Namespace, data: dict, *, epochs: int, dtype):
        self.toy, self.args, self.epochs = toy, args, epochs
        self.train_x = jnp.asarray(data["train_images"], dtype)
        self.train_y = jnp.asarray(data["train_labels"])
        self.test_x = jnp.asarray(data["test_images"], dtype)
        self.test_y = np.asarray(data["test_labels"])
        self.iterations = len(self.train_y) // args.batch_size
        if self.iterations < 1:
            raise ValueError(
                f"--batch-size {args.batch_size} exceeds the {len(self.train_y)} training digits"
            )
        self.optimizer = _optimizer(args, epochs * self.iterations)
        self.train_step = jax.jit(self._train_step)
        self.frozen_step = jax.jit(self._frozen_step)
        self.measure_step = jax.jit(self._measure_step)
        self.predict = jax.jit(lambda params, x: toy.outputs(params, x).mean(axis=1))

    def _update(self, params, opt_state, grads):
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def _train_step(self, params, opt_state, x, labels):
        loss, grads = jax.value_and_grad(self.toy.loss)(params, x, labels)
        params, opt_state = self._update(params, opt_state, grads)
        return params, opt_state, loss

    def _frozen_step(self, params, opt_state, x, labels):
        """A step with the first layer's gradient set to 0: only the rest (the FC) learns."""
        loss, grads = jax.value_and_grad(self.toy.loss)(params, x, labels)
        grads = self.toy.with_first_layer(grads, jnp.zeros_like(self.toy.first_layer(grads)))
        params, opt_state = self._update(params, opt_state, grads)
        return params, opt_state, loss

    def _measure_step(self, params, opt_state, x, labels):
        """A training step that also returns, for every eps of ``--cosine-eps``, the cosine
        between the first layer's gradient (used for this update) and its FDG."""
        loss, grads = jax.value_and_grad(self.toy.loss)(params, x, labels)
        gradient = self.toy.first_layer(grads)
        first_loss = self.toy.first_layer_loss(params, x, labels)
        weights = self.toy.first_layer(params)
        cosines = jnp.stack(
            [
                cosine_similarity(
                    gradient,
                    finite_difference_gradient(
                        first_loss, weights, eps=eps, chunk_size=self.args.chunk_size
                    ),
                )
                for eps in self.args.cosine_eps
            ]
        )
        params, opt_state = self._update(params, opt_state, grads)
        return params, opt_state, loss, cosines

    def fdg_step(self, eps: float) -> Callable:
        def step(params, opt_state, x, labels):
            grads = self.toy.fdg(
                params,
                x,
                labels,
                eps=eps,
                chunk_size=self.args.chunk_size,
                scope=self.args.fdg_scope,
            )
            loss = self.toy.loss(params, x, labels)
            params, opt_state = self._update(params, opt_state, grads)
            return params, opt_state, loss

        return jax.jit(step)

    def accuracy(self, params) -> float:
        predictions = np.asarray(self.predict(params, self.test_x)).argmax(axis=1)
        return float(np.mean(predictions == self.test_y))

    def batches(self, epoch: int):
        order = np.random.default_rng([self.args.seed, epoch]).permutation(len(self.train_y))
        size = self.args.batch_size
        for i in range(self.iterations):
            index = order[i * size : (i + 1) * size]
            yield self.train_x[index], self.train_y[index]

    def run(self, label: str, step: Callable | None = None, *, measure: bool = False) -> dict:
        """Trains from the initial parameters; returns the per-epoch train loss, test accuracy
        and (``measure``) the per-epoch mean cosine for every eps."""
        params = self.toy.initial_params
        opt_state = self.optimizer.init(params)
        measured = min(self.args.cosine_iterations, self.iterations)
        history = {"train_loss": [], "test_accuracy": []}
        if measure:
            history["cosine"] = {_key(eps): [] for eps in self.args.cosine_eps}
        start = time.perf_counter()
        for epoch in range(self.epochs):
            losses, cosines = [], []
            for i, (x, labels) in enumerate(self.batches(epoch)):
                if measure and i < measured:
                    params, opt_state, loss, cos = self.measure_step(params, opt_state, x, labels)
                    cosines.append(np.asarray(cos))
                elif step is not None:
                    params, opt_state, loss = step(params, opt_state, x, labels)
                else:
                    params, opt_state, loss = self.train_step(params, opt_state, x, labels)
                losses.append(float(loss))
            history["train_loss"].append(float(np.mean(losses)))
            history["test_accuracy"].append(self.accuracy(params))
            line = (
                f"[{label}] epoch {epoch + 1}/{self.epochs}: train loss "
                f"{history['train_loss'][-1]:.4f}, test accuracy {history['test_accuracy'][-1]:.4f}"
            )
            if measure:
                means = np.mean(cosines, axis=0)
                for eps, value in zip(self.args.cosine_eps, means, strict=True):
                    history["cosine"][_key(eps)].append(float(value))
                shown = ", ".join(
                    f"{eps:g}: {value:.4f}"
                    for eps, value in zip(self.args.cosine_eps, means, strict=True)
                )
                line += f", mean cosine over {len(cosines)} iterations (eps {shown})"
            print(f"{line} [{time.perf_counter() - start:.1f}s]", flush=True)
        if measure:
            history["cosine_mean"] = {
                key: float(np.mean(values)) for key, values in history["cosine"].items()
            }
        history["final_test_accuracy"] = history["test_accuracy"][-1]
        history["seconds"] = time.perf_counter() - start
        return history


def _key(eps: float) -> str:
    return f"{eps:g}"


def _cosine_rows(name: str, result: dict, args, paper) -> list[str]:
    rows = []
    for eps in args.cosine_eps:
        values = result["cosine"][_key(eps)]
        cells = " | ".join(f"{v:.4f}" for v in values)
        statement = paper if isinstance(paper, str) else paper.get(eps, "")
        mean = result["cosine_mean"][_key(eps)]
        rows.append(f"| {name} | {eps:g} | {cells} | **{mean:.4f}** | {statement} |")
    return rows


def markdown(results: dict, args: argparse.Namespace) -> str:
    lines = ["# Dspike's FDG study (Sec. 4.2) on scikit-learn's digits", ""]
    config = results["config"]
    lines += [
        f"Toy model `fdg_toy` (conv3x3(6)-ReLU/LIF-avgpool2-FC, no norm), T = {args.T}, batch "
        f"{args.batch_size}, {config['optimizer']} at lr {args.lr:g} cosine-decayed to 0, "
        f"{args.precision}, seed {args.seed}; {results['iterations_per_epoch']} iterations per "
        f"epoch ({results['train_size']} training digits, last partial batch dropped), "
        f"{results['test_size']} test digits.",
        "",
    ]
    if "ann" in results or "snn" in results:
        measured = results["cosine_iterations_per_epoch"]
        epochs = args.cosine_epochs
        header = " | ".join(f"epoch {e + 1}" for e in range(epochs))
        lines += [
            "## Experiments I and II: cosine(gradient, FDG) of the first layer (Fig. 2)",
            "",
            f"Mean over the first min({args.cosine_iterations}, {results['iterations_per_epoch']})"
            f" = {measured} iterations of each epoch (the paper: the first 100 of an MNIST "
            f"epoch).",
            "",
            f"| model | eps | {header} | mean | paper (MNIST) |",
            "|---|---|" + "---|" * epochs + "---|---|",
        ]
        if "ann" in results:
            lines += _cosine_rows("I: ANN, true gradient", results["ann"], args, PAPER["ann"])
        if "snn" in results:
            lines += _cosine_rows(
                "II: SNN, rectangular SG (a = 1)", results["snn"], args, PAPER["snn"]
            )
        lines.append("")
    if "training" in results:
        training = results["training"]
        best = training["best_fdg_eps"]
        lines += [
            f"## Experiment III: training the SNN for {args.train_epochs} epochs (Table 1)",
            "",
            f"FDG scope: {SCOPES[args.fdg_scope]}.",
            "",
            "| gradient | eps | final test accuracy | best epoch's accuracy | final train loss "
            "| paper (MNIST) |",
            "|---|---|---|---|---|---|",
        ]
        surrogate = training["surrogate"]
        lines.append(
            f"| rectangular SG (a = 1) | - | **{surrogate['final_test_accuracy']:.4f}** | "
            f"{max(surrogate['test_accuracy']):.4f} | {surrogate['train_loss'][-1]:.4f} | "
            f"{PAPER['surrogate_accuracy']} |"
        )
        frozen = training["frozen_first_layer"]
        lines.append(
            f"| none for the first layer (frozen at init), exact FC gradient | - | "
            f"{frozen['final_test_accuracy']:.4f} | {max(frozen['test_accuracy']):.4f} | "
            f"{frozen['train_loss'][-1]:.4f} | (a control, not in the paper) |"
        )
        for eps in args.train_eps:
            run = training["fdg"][_key(eps)]
            paper = "best (0.1 in the paper)" if eps == PAPER["best_eps"] else ""
            lines.append(
                f"| FDG | {eps:g} | **{run['final_test_accuracy']:.4f}** | "
                f"{max(run['test_accuracy']):.4f} | {run['train_loss'][-1]:.4f} | {paper} |"
            )
        runs = [training["fdg"][_key(eps)] for eps in args.train_eps]
        accuracies = [run["final_test_accuracy"] for run in [surrogate, *runs]]
        spread = round((max(accuracies) - min(accuracies)) * results["test_size"])
        lines += [
            "",
            f"Best FDG eps by final test accuracy: {best:g}; by final train loss: "
            f"{training['lowest_loss_fdg_eps']:g} (paper: {PAPER['best_eps']:g}, by test "
            f"accuracy). The surrogate and FDG runs end within {spread} test digits of each "
            f"other; the control with a frozen first layer ends at "
            f"{frozen['final_test_accuracy']:.4f}.",
            "",
        ]
    lines.append(f"Wall time: {results['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def _plot(results: dict, args: argparse.Namespace, workdir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    titles = (("ann", "(a) ANN: true gradient vs FDG"), ("snn", "(b) SNN: rectangular SG vs FDG"))
    panels = [(key, title) for key, title in titles if key in results]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
        for ax, (key, title) in zip(axes[0], panels, strict=True):
            for eps in args.cosine_eps:
                values = results[key]["cosine"][_key(eps)]
                ax.plot(range(1, len(values) + 1), values, marker="o", label=f"eps = {eps:g}")
            ax.set(title=title, xlabel="epoch", ylabel="cosine similarity")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylim(min(-0.05, ax.get_ylim()[0]), 1.05)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(workdir / "fdg_cosine.png", dpi=120)
        plt.close(fig)
    if "training" in results:
        training = results["training"]
        runs = [(f"FDG, eps = {eps:g}", training["fdg"][_key(eps)], "-") for eps in args.train_eps]
        runs += [
            ("rectangular SG (a = 1)", training["surrogate"], "k--"),
            ("first layer frozen", training["frozen_first_layer"], "k:"),
        ]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key, label in zip(
            axes, ("test_accuracy", "train_loss"), ("test accuracy", "train loss"), strict=True
        ):
            for name, run, style in runs:
                values = run[key]
                ax.plot(range(1, len(values) + 1), values, style, marker=".", label=name)
            ax.set(xlabel="epoch", ylabel=label)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        axes[0].set(title="Experiment III: test accuracy", ylim=(0, 1))
        axes[1].set(title="Experiment III: mean train loss of the epoch")
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(workdir / "fdg_training.png", dpi=120)
        plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    """Runs the chosen experiments; writes and returns the results (see the module docstring)."""
    args = parse_args(argv)
    with jax.enable_x64(args.precision == "float64"):
        return _study(args)


def _study(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    dtype = jnp.float64 if args.precision == "float64" else jnp.float32
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = load_digits()
    if args.train_size:
        data["train_images"] = data["train_images"][: args.train_size]
        data["train_labels"] = data["train_labels"][: args.train_size]
    config = {key: getattr(args, key) for key in vars(args)}
    if args.optimizer == "sgd" and args.momentum:
        config["optimizer"] = f"sgd (momentum {args.momentum:g})"
    results: dict = {"config": config}
    results["train_size"] = len(data["train_labels"])
    results["test_size"] = len(data["test_labels"])
    results["iterations_per_epoch"] = len(data["train_labels"]) // args.batch_size
    results["cosine_iterations_per_epoch"] = min(
        args.cosine_iterations, results["iterations_per_epoch"]
    )
    print(
        f"FDG study: {results['iterations_per_epoch']} iterations per epoch; cosines averaged "
        f"over the first {results['cosine_iterations_per_epoch']} of each epoch; "
        f"{args.precision}, {args.optimizer}",
        flush=True,
    )
    for number, key, spiking, label in ((1, "ann", False, "I: ANN"), (2, "snn", True, "II: SNN")):
        if number in args.experiments:
            toy = Toy(spiking=spiking, steps=args.T, seed=args.seed, dtype=dtype)
            trainer = Trainer(toy, args, data, epochs=args.cosine_epochs, dtype=dtype)
            results[key] = trainer.run(label, measure=True)
    if 3 in args.experiments:
        toy = Toy(spiking=True, steps=args.T, seed=args.seed, dtype=dtype)
        trainer = Trainer(toy, args, data, epochs=args.train_epochs, dtype=dtype)
        training = {
            "surrogate": trainer.run("III: rectangular SG"),
            "frozen_first_layer": trainer.run("III: first layer frozen", trainer.frozen_step),
            "fdg": {},
        }
        for eps in args.train_eps:
            run = trainer.run(f"III: FDG eps={eps:g}", trainer.fdg_step(eps))
            run["seconds_per_step"] = run["seconds"] / (args.train_epochs * trainer.iterations)
            training["fdg"][_key(eps)] = run
        finals = {eps: training["fdg"][_key(eps)]["final_test_accuracy"] for eps in args.train_eps}
        training["best_fdg_eps"] = max(finals, key=finals.get)
        losses = {eps: training["fdg"][_key(eps)]["train_loss"][-1] for eps in args.train_eps}
        training["lowest_loss_fdg_eps"] = min(losses, key=losses.get)
        results["training"] = training
    results["seconds"] = time.perf_counter() - start
    results["paper"] = {
        "ann": PAPER["ann"],
        "snn": {_key(eps): text for eps, text in PAPER["snn"].items()},
        "surrogate_accuracy": PAPER["surrogate_accuracy"],
        "best_eps": PAPER["best_eps"],
    }
    table = markdown(results, args)
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (workdir / "results.md").write_text(table)
    _plot(results, args, workdir)
    print(table, flush=True)
    print(f"wrote results.json, results.md and the figures to {workdir}", flush=True)
    return results


if __name__ == "__main__":
    main()
