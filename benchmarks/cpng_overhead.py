"""What CPNG costs, as a share of a training epoch (the paper: 1.57% for VGG-16 on CIFAR-100).

    python -m benchmarks.cpng_overhead [--T 5] [--batch B] [--repeats 5]
        [--results benchmarks/RESULTS.md]

Two configurations, each with method ``cpng``: the quickstart's digits net
(:data:`jsnn.recipes.DIGITS`, 8x8x1 inputs, its own T and batch, 1,437 training images) and
the paper's own ``cpng_vgg16_cifar100`` of :mod:`jsnn.recipes` (VGG-16, 32x32x3, 100 classes) at
``--T`` and batch B (the recipe's 256 on an accelerator; 4 on a CPU, where a VGG-16 step at
batch 256 takes minutes), on random data. For each, on the current device:

- the trainer's training step (:func:`jsnn.train.make_train_step`, state donated), the median
  of ``--repeats`` calls after a warm-up;
- CPNG's epoch-end hook (:func:`jsnn.methods.cpng.chi_control`) on the live model, the median
  of ``--repeats`` calls after its first (reported apart: it compiles the membrane pass and
  the binary search), each call in the worst case: every layer's record set just below its
  chi, so that every layer's beta is re-solved;
- apart, the membrane pass of the hook alone (one training-mode forward pass with the
  statistics, :func:`jsnn.methods.cpng.membrane_stats`, jitted as the hook jits it); the rest
  of the hook (Algorithm 1 and the binary searches on the host, setting the betas) is the hook
  minus this pass.

The share of an epoch is ``hook / (steps x step + hook)`` with ``steps`` the training steps of
one epoch at the timed batch (the evaluation left out, which makes the share larger). For VGG-16
at a batch below the recipe's 256 it is also extrapolated to 256 (195 steps an epoch): the pass
and the step both cost about linearly in the batch, the rest does not depend on it, so
``share(256) = (pass / step) / 195 + rest / (195 x step x 256 / B)``; that row says
"extrapolated".

Appends a section (date, device, versions, commit, command, table) to ``--results`` and prints
it. Seeds are fixed; timings on a shared machine are noisy, so the load is recorded with them.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common import (
    RESULTS,
    DataShape,
    fmt,
    log,
    publish,
    start_jax_run,
    timed_runs,
)
from jsnn import losses, recipes, run, train
from jsnn.config import Config
from jsnn.methods import cpng

VGG = "cpng_vgg16_cifar100"
CIFAR_TRAIN = 50_000


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cpng_overhead",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    recipe = recipes.CIFAR[VGG]
    parser.add_argument("--T", type=int, default=recipe.model.time_steps, help="VGG-16's T")
    parser.add_argument(
        "--batch", type=int, default=None, help="VGG-16's batch (auto: 4 on a CPU, else 256)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random data")
    parser.add_argument("--results", type=Path, default=RESULTS, help="file to append to")
    args = parser.parse_args(argv)
    for name in ("T", "batch", "repeats"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1, got {value}")
    return args


def configurations(args: argparse.Namespace) -> list[tuple[str, Config, DataShape, int]]:
    """(name, config, data shape, training images) of the two benchmarked runs."""
    batch = args.batch or (
        4 if jax.default_backend() == "cpu" else recipes.CIFAR[VGG].train.batch_size
    )
    digits = recipes.DIGITS["digits"].override({"method.name": "cpng"})
    vgg = recipes.CIFAR[VGG].override({"model.time_steps": args.T, "train.batch_size": batch})
    return [
        ("digits net", digits, DataShape(10, (8, 8, 1)), 1437),
        ("VGG-16, CIFAR-100", vgg, DataShape(100, (32, 32, 3)), CIFAR_TRAIN),
    ]


def _random_batch(rng: np.random.Generator, config: Config, shape: DataShape) -> dict:
    size = config.train.batch_size
    images = rng.uniform(size=(size, *shape.input_shape)).astype(np.float32)
    labels = rng.integers(0, shape.num_classes, size=size).astype(np.int32)
    return {"image": jnp.asarray(images), "label": jnp.asarray(labels)}


def measure(config: Config, shape: DataShape, num_train: int, args) -> dict:
    """The medians of one configuration (seconds) and its share of an epoch."""
    rng = np.random.default_rng(args.seed)
    batch = _random_batch(rng, config, shape)
    steps = num_train // config.train.batch_size
    model = run.build_model(config, shape)
    tx = train.optimizer(config.train, steps)
    step = train.make_train_step(tx, losses.get(config.train.loss), platform=jax.default_backend())
    carried = [train.TrainState.create(model, tx)]

    def run_step():  # the step donates its state: carry it over
        carried[0], metrics = step(carried[0], batch)
        return metrics

    step_times = timed_runs(run_step, jax.block_until_ready, args.repeats)
    live = carried[0].model()
    (hook,) = config.method.epoch_end(live, config)
    start = time.perf_counter()
    first = hook(live, 0, batch)  # records every layer's chi (compiles the membrane pass)
    first_seconds = time.perf_counter() - start
    layers = cpng.spiking_layers(live)

    def worst_case():
        """Records just below chi at beta 1: the next call re-solves every layer's beta."""
        for name, layer in layers.items():
            layer.surrogate.set_value(type(layer.surrogate.get_value())(beta=1.0))
            layer.chi_record.set_value(jnp.float32(first[f"chi/{name}"] - 0.05))

    hook_times = []
    for epoch in range(1, args.repeats + 2):  # the first re-solving call compiles the search
        worst_case()
        start = time.perf_counter()
        hook(live, epoch, batch)
        hook_times.append(time.perf_counter() - start)
    search_compile = hook_times.pop(0)

    @functools.partial(jax.jit, static_argnums=0)
    def membrane_pass(graphdef, state, images):
        return cpng.membrane_stats(nnx.merge(graphdef, state), images)

    graphdef, state = nnx.split(live)
    pass_times = timed_runs(
        lambda: membrane_pass(graphdef, state, batch["image"]), jax.block_until_ready, args.repeats
    )
    result = {
        "batch": config.train.batch_size,
        "T": config.model.time_steps,
        "layers": len(layers),
        "steps": steps,
        "step": statistics.median(step_times),
        "hook": statistics.median(hook_times),
        "pass": statistics.median(pass_times),
        "first_hook": first_seconds,
        "first_search": search_compile,
    }
    result["rest"] = max(result["hook"] - result["pass"], 0.0)
    result["share"] = result["hook"] / (steps * result["step"] + result["hook"])
    recipe_batch = recipes.CIFAR[VGG].train.batch_size
    if num_train == CIFAR_TRAIN and config.train.batch_size < recipe_batch:
        steps_at_recipe = CIFAR_TRAIN // recipe_batch
        step_at_recipe = result["step"] * recipe_batch / config.train.batch_size
        result["extrapolated_share"] = (result["pass"] / result["step"]) / steps_at_recipe + result[
            "rest"
        ] / (steps_at_recipe * step_at_recipe)
        result["extrapolated_steps"] = steps_at_recipe
    log(
        f"step {fmt(result['step'], 3)} s, hook {fmt(result['hook'], 3)} s, "
        f"share {100 * result['share']:.3f}%"
    )
    return result


def markdown(rows: list[tuple[str, dict]]) -> list[str]:
    lines = [
        "CPNG's epoch-end hook against an epoch of training steps (medians in seconds; the hook "
        "in its worst case, every layer's beta re-solved; first calls compile).",
        "",
        "| run | T | batch | spiking layers | step | hook | of it: membrane pass | rest | "
        "steps per epoch | CPNG share of an epoch | first hook call | first re-solving call |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        cells = [
            name,
            str(r["T"]),
            str(r["batch"]),
            str(r["layers"]),
            fmt(r["step"], 4),
            fmt(r["hook"], 4),
            fmt(r["pass"], 4),
            fmt(r["rest"], 4),
            str(r["steps"]),
            f"{100 * r['share']:.3f}%",
            fmt(r["first_hook"], 2),
            fmt(r["first_search"], 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if "extrapolated_share" in r:
            lines.append(
                f"| {name} at batch 256, extrapolated | {r['T']} | 256 | {r['layers']} | | | | | "
                f"{r['extrapolated_steps']} | {100 * r['extrapolated_share']:.3f}% | | |"
            )
    lines += ["", "The paper: 1.57% of the total training time for VGG-16 on CIFAR-100."]
    return lines


def main(argv: Sequence[str] | None = None) -> dict:
    command = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(command)
    started = start_jax_run()
    rows = []
    for name, config, shape, num_train in configurations(args):
        log(f"{name}: T {config.model.time_steps}, batch {config.train.batch_size}")
        rows.append((name, measure(config, shape, num_train, args)))
    text = publish("cpng_overhead", command, markdown(rows), results=args.results, run=started)
    return {"rows": dict(rows), "markdown": text}


if __name__ == "__main__":
    main()
