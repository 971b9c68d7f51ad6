"""What Dspike's temperature search costs, and how often the random-direction estimator picks
the temperature the exact search picks.

    python -m benchmarks.fdg_search [--batch B] [--T 6] [--directions 16,64,256] [--chunks 1,16]
        [--max-passes P] [--fdg-weights N] [--no-agreement] [--results benchmarks/RESULTS.md]

Part 1, cost (the CIFAR-10 recipe ``dspike_cifar10``: ``resnet18_modified``, 32x32x3, T = 6,
random data). On the current device, at a small batch B (8 on an accelerator; 2 on a CPU, where
a ResNet-18 step at batch 8 already takes about 10 s): one jitted training step (median of
``--repeats`` after a warm-up), one forward pass of the loss, the three surrogate gradients of
the first layer (b, b + 0.2, b - 0.2; the fixed part of every search), the search with the
exact finite-difference gradient (FDG, Dspike Eq. 10: 2 forward passes per weight of the first
layer, 3456 for ResNet-18) and with the random-direction estimator (2k passes), each compiled
ahead of time (compile reported apart) and then run. A search whose forward passes exceed
``--max-passes`` is not run whole: the exact FDG is timed on its first ``--fdg-weights``
weights (the same code, fewer weights) and the rest is extrapolated linearly, ``t = t_grads +
passes x t_pass`` with ``t_grads`` the measured surrogate gradients and ``t_pass`` the lowest
cost per pass, ``(time - t_grads) / passes``, of the timed searches at the same ``fdg_chunk`` (a
pass costs the same with a basis or a random direction; the lowest is the run least disturbed
by other load); every such row says "extrapolated". XLA's buffer sizes of
the compiled search (``memory_analysis``) are reported per ``fdg_chunk`` at B and, compiled
only (never run), at the recipe's batch 128.

Each search is reported as a multiple of one training step at the same batch, and as a share
of one CIFAR-10 epoch at the recipe's batch 128 (50,000 images: 390 steps), computed as
``(search(B) / step(B)) / 390``: the search runs on ONE batch and both it and a step cost about
linearly in the batch, so their ratio is taken as independent of the batch (``--check-batch
128`` times a step and a forward pass at 128, one run each after a warm-up, to check the
forward/step ratio there).

Part 2, agreement (``--agreement``, on by default): the quickstart's ``digits_net`` (first
layer 3*3*1*32 = 288 weights) trained on the bundled digits with Dspike's search applied before
every epoch as ``method="dspike"`` does. At each epoch start, on its first batches: the exact
FDG, and the FDG sketched on k random directions for each k with several random keys; each is
turned into the search's decision (the candidate among b, b + 0.2, b - 0.2 whose surrogate
gradient is most similar) at the run's own b and at every b of ``--agreement-b-grid`` (the FDG
does not depend on b, so extra temperatures cost only gradients; on the digits the decision is
trivial, always b + 0.2, until b nears the cosine's maximum). Reported: the share of random
decisions equal to the exact one (with baselines that do not search), the cosine with the exact
FDG lost when they differ, and the cost of each search relative to the exact one.

Appends a section (date, device, versions, commit, command, tables) to ``--results`` and prints
the tables. Seeds are fixed (``--seed``); timings on a shared machine are noisy, so the load
average is recorded with them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree

from benchmarks.common import (
    RESULTS,
    DataShape,
    compile_timed,
    elapsed,
    log,
    median_time,
    peak_memory_mib,
    positive_ints,
    publish,
    start_jax_run,
    temp_mib,
)
from experiments import cifar
from experiments.fdg_study import positive_floats
from jsnn import train
from jsnn.methods import fdg
from jsnn.train.dspike import (
    searched_loss,
    searched_path,
    select_params,
    temperature,
    with_temperature,
)
from jsnn.train.optim import optimizer
from jsnn.train.step import TrainState, train_step

RECIPE = cifar.RECIPES["dspike_cifar10"]
CIFAR10_TRAIN_IMAGES = 50_000
EPOCH_STEPS = CIFAR10_TRAIN_IMAGES // RECIPE.batch_size  # 390
# ----------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fdg_search",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        epilog="Defaults marked 'auto' depend on the device: the first value on a CPU, the "
        "second on an accelerator.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    part1 = parser.add_argument_group("part 1: cost of one search")
    add = part1.add_argument
    add("--model", default=RECIPE.model, help="model of the timed searches")
    add("--image-size", type=int, default=32, help="input height and width (CIFAR: 32)")
    add("--channels", type=int, default=3, help="input channels (CIFAR: 3)")
    add("--T", type=int, default=RECIPE.steps, help="time steps")
    add("--batch", type=int, default=None, help="batch of the timings (auto: 2 / 8)")
    add("--repeats", type=int, default=5, help="timed training steps (and forward passes)")
    add(
        "--search-repeats",
        type=int,
        default=None,
        help="timed runs of each search, after its ahead-of-time compile (auto: 1 / 3, with a "
        "warm-up run when more than 1)",
    )
    add(
        "--directions",
        type=positive_ints,
        default=(16, 64, 256),
        help="k of the random-direction estimator",
    )
    add(
        "--chunk",
        type=int,
        default=RECIPE.fdg_chunk,
        help="fdg_chunk of the random-direction searches (the recipe's by default)",
    )
    add(
        "--chunks",
        type=positive_ints,
        default=(1, 16),
        help="fdg_chunk values the exact search is timed at",
    )
    add(
        "--max-passes",
        type=int,
        default=None,
        help="forward passes beyond which a search is extrapolated from a shorter one rather "
        "than run (0: run everything; auto: 32 / 0)",
    )
    add(
        "--fdg-weights",
        type=int,
        default=0,
        help="time the exact FDG on the first N weights of the first layer and extrapolate "
        "(0: auto, all of them if that fits in --max-passes, else --max-passes / 2)",
    )
    add(
        "--memory-batch",
        type=int,
        default=RECIPE.batch_size,
        help="batch at which the step and the searches are compiled (not run) for XLA's buffer "
        "sizes (0: skip)",
    )
    add(
        "--memory-chunks",
        type=positive_ints,
        default=(1, 4, 16),
        help="fdg_chunk values compiled at --memory-batch",
    )
    add(
        "--check-batch",
        type=int,
        default=None,
        help="also time a step and a forward pass at this batch, to check that their ratio "
        "does not depend on the batch (0: skip; auto: 0 / 128)",
    )
    part2 = parser.add_argument_group("part 2: agreement with the exact search (digits_net)")
    add = part2.add_argument
    add(
        "--agreement",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run part 2",
    )
    add("--agreement-epochs", type=int, default=6, help="epochs of digits_net training")
    add("--agreement-batches", type=int, default=2, help="batches searched at each epoch start")
    add(
        "--agreement-directions",
        type=positive_ints,
        default=(8, 32, 64, 128),
        help="k of the random-direction estimator",
    )
    add("--agreement-keys", type=int, default=2, help="random keys per k and batch")
    add(
        "--agreement-b-grid",
        type=positive_floats,
        default=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0),
        help="temperatures each point is also decided at (besides the run's own b): the FDG "
        "does not depend on b, so each costs only 3 more gradients; on the digits the cosine "
        "rises with b up to about 5-8, where the decisions get close",
    )
    add("--agreement-T", type=int, default=train.Config().steps, help="time steps of digits_net")
    add(
        "--agreement-batch-size",
        type=int,
        default=train.Config().batch_size,
        help="training (and search) batch",
    )
    common = parser.add_argument_group("output")
    common.add_argument("--seed", type=int, default=0, help="model, data and direction seed")
    common.add_argument(
        "--results", type=Path, default=RESULTS, help="markdown file the section is appended to"
    )
    args = parser.parse_args(argv)
    for name in ("image_size", "channels", "T", "repeats", "chunk"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("agreement_epochs", "agreement_batches", "agreement_keys", "agreement_T"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("batch", "search_repeats", "agreement_batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("max_passes", "fdg_weights", "memory_batch", "check_batch"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be at least 0")
    cpu = jax.devices()[0].platform == "cpu"
    for name, on_cpu, elsewhere in (
        ("batch", 2, 8),
        ("search_repeats", 1, 3),
        ("max_passes", 32, 0),
        ("check_batch", 0, RECIPE.batch_size),
    ):
        if getattr(args, name) is None:
            setattr(args, name, on_cpu if cpu else elsewhere)
    return args


# ----------------------------------------------------------------------------------------------
# Measuring


class Searches:
    """The hook's search (:func:`jsnn.train.dspike.temperature_search_hook`) in pieces that can
    be timed apart: the same loss (training mode, the state's BN and neurons, the temperature
    put into every Dspike layer), the same :func:`jsnn.methods.fdg.search_temperature`, and
    optionally only the first ``weights`` weights of the searched layer perturbed."""

    def __init__(self, config: train.Config, model: nnx.Module):
        self.config = config
        self.prefix = searched_path(model, config.fdg_layer)
        selected, _ = select_params(nnx.state(model, nnx.Param), self.prefix)
        self.size = sum(leaf.size for leaf in selected)

    def _loss(self, state: TrainState, batch: dict, weights: int | None):
        loss_of, selected = searched_loss(state, batch, self.prefix, self.config.loss)
        flat, unravel = ravel_pytree(selected)
        count = flat.size if weights is None else weights

        def loss(v, b):
            full = v if count == flat.size else jnp.concatenate([v, flat[count:]])
            return loss_of(unravel(full), b)

        return loss, flat[:count], temperature(state.rest)

    def forward(self, state: TrainState, batch: dict) -> jax.Array:
        """One forward pass of the loss, as each perturbed pass of the FDG does."""
        loss, w, b = self._loss(state, batch, None)
        return loss(w, b)

    def gradients(self, state: TrainState, batch: dict) -> jax.Array:
        """The surrogate gradients for ``b``, ``b + step``, ``b - step`` (vmapped over b)."""
        loss, w, b = self._loss(state, batch, None)
        b = jnp.asarray(b, w.dtype)
        step = self.config.temperature_step
        return jax.vmap(jax.grad(loss), in_axes=(None, 0))(w, jnp.stack([b, b + step, b - step]))

    def search(self, state, batch, directions=None, *, chunk: int, weights: int | None = None):
        """One search: the exact FDG (``directions=None``) over all weights or the first
        ``weights``, or the random-direction estimator on ``directions``."""
        loss, w, b = self._loss(state, batch, weights)
        return fdg.search_temperature(
            loss,
            w,
            b,
            step=self.config.temperature_step,
            eps=self.config.fdg_eps,
            directions=directions,
            chunk_size=chunk,
        )

    def exact(self, *, chunk: int, weights: int | None = None):
        return jax.jit(
            functools.partial(self.search, directions=None, chunk=chunk, weights=weights)
        )

    def random(self, *, chunk: int):
        return jax.jit(functools.partial(self.search, chunk=chunk))

    def directions(self, key: jax.Array, count: int) -> jax.Array:
        return fdg.random_directions(key, self.size, count)

    # The search in parts, for deciding at many temperatures at the price of one FDG: the loss
    # does not depend on b (only its surrogate gradient does), so neither do the FDG and its
    # sketch.

    def reference(self, state, batch, *, chunk: int) -> jax.Array:
        """The exact FDG of the searched weights, flattened (Eq. 10)."""
        loss, w, b = self._loss(state, batch, None)
        return fdg.finite_difference_gradient(
            lambda v: loss(v, b), w, eps=self.config.fdg_eps, chunk_size=chunk
        )

    def sketch(self, state, batch, directions, *, chunk: int) -> jax.Array:
        """The FDG sketched on ``directions`` ``[k, size]``."""
        loss, w, b = self._loss(state, batch, None)
        return fdg.directional_differences(
            lambda v: loss(v, b), w, directions, eps=self.config.fdg_eps, chunk_size=chunk
        )

    def candidate_gradients(self, state, batch, temperatures) -> tuple[jax.Array, jax.Array]:
        """For each b of ``temperatures`` ``[n]``: the candidates ``[n, 3]`` (b, b + step,
        b - step) and their surrogate gradients ``[n, 3, size]``, in one vmap."""
        loss, w, _ = self._loss(state, batch, None)
        step = self.config.temperature_step
        temperatures = jnp.asarray(temperatures, w.dtype)
        candidates = jnp.stack([temperatures, temperatures + step, temperatures - step], axis=1)
        gradients = jax.vmap(jax.grad(loss), in_axes=(None, 0))(w, candidates.reshape(-1))
        return candidates, gradients.reshape(*candidates.shape, -1)


@jax.jit
def candidate_cosines(candidates, gradients, reference, directions=None) -> jax.Array:
    """The cosines ``[n, 3]`` :func:`jsnn.methods.fdg.search_temperature` compares, for each
    row of ``candidates``: each gradient (sketched on ``directions`` if given) with
    ``reference`` (the FDG or its sketch); -inf for candidates <= 0. The pick is the argmax."""
    if directions is not None:
        gradients = gradients @ directions.T
    cosine = jax.vmap(jax.vmap(fdg.cosine_similarity, in_axes=(0, None)), in_axes=(0, None))
    return jnp.where(candidates > 0, cosine(gradients, reference), -jnp.inf)


@dataclasses.dataclass
class Row:
    name: str
    passes: int | None
    chunk: int | None
    how: str
    compile_s: float | None
    seconds: float
    temp_mib: float | None = None


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _random_batch(rng: np.random.Generator, batch: int, size: int, channels: int) -> dict:
    return {
        "image": jnp.asarray(rng.random((batch, size, size, channels), dtype=np.float32)),
        "label": jnp.asarray(rng.integers(0, 10, batch).astype(np.int32)),
    }


def _abstract_batch(batch: int, size: int, channels: int) -> dict:
    return {
        "image": jax.ShapeDtypeStruct((batch, size, size, channels), jnp.float32),
        "label": jax.ShapeDtypeStruct((batch,), jnp.int32),
    }


def measure_cost(args: argparse.Namespace) -> dict:
    """Part 1: the rows of the cost table and what the notes need."""
    config = dataclasses.replace(
        RECIPE,
        model=args.model,
        steps=args.T,
        method="dspike",
        fdg_chunk=args.chunk,
        seed=args.seed,
    )
    shape = DataShape(num_classes=10, input_shape=(args.image_size, args.image_size, args.channels))
    log(f"part 1: building {args.model} (T = {args.T}) for {shape.input_shape} inputs")
    model = train.build_model(config, shape)
    mesh = train.data_mesh(jax.devices()[:1])
    tx = optimizer(config, EPOCH_STEPS)
    searches = Searches(config, model)
    size = searches.size
    state = train.replicate(TrainState.create(model, tx), mesh)
    rng = np.random.default_rng(args.seed)
    batch = _random_batch(rng, args.batch, args.image_size, args.channels)
    rows: list[Row] = []
    memory: list[dict] = []
    cap = args.max_passes

    log(f"training step at batch {args.batch}: compiling")
    step = jax.jit(functools.partial(train_step, tx=tx, loss=config.loss), donate_argnums=0)
    step_compiled, compile_s = compile_timed(step, state, batch)
    holder = {"state": state}

    def run_step():
        holder["state"], metrics = step_compiled(holder["state"], batch)
        return holder["state"], metrics

    t_step = median_time(run_step, jax.block_until_ready, args.repeats, warmup=1)
    state = holder["state"]
    rows.append(
        Row(
            f"training step (median of {args.repeats})",
            None,
            None,
            "measured",
            compile_s,
            t_step,
            temp_mib(step_compiled),
        )
    )
    log(f"training step: {t_step:.3f} s (compile {compile_s:.1f} s)")

    forward, compile_s = compile_timed(jax.jit(searches.forward), state, batch)
    t_forward = median_time(
        lambda: forward(state, batch), jax.block_until_ready, args.repeats, warmup=1
    )
    rows.append(
        Row(
            f"one forward pass of the loss (median of {args.repeats})",
            1,
            None,
            "measured",
            compile_s,
            t_forward,
            temp_mib(forward),
        )
    )
    log(f"forward pass: {t_forward:.3f} s (compile {compile_s:.1f} s)")

    repeats, warmup = args.search_repeats, args.search_repeats > 1
    gradients, compile_s = compile_timed(jax.jit(searches.gradients), state, batch)
    t_grads = median_time(
        lambda: gradients(state, batch), jax.block_until_ready, repeats, warmup=int(warmup)
    )
    rows.append(
        Row(
            "the 3 surrogate gradients alone (b, b+0.2, b-0.2; fixed part of a search)",
            0,
            None,
            "measured",
            compile_s,
            t_grads,
            temp_mib(gradients),
        )
    )
    log(f"3 surrogate gradients: {t_grads:.3f} s (compile {compile_s:.1f} s)")

    # The exact FDG: all weights when they fit in the cap, else the first `weights` of them.
    weights = args.fdg_weights or (size if cap == 0 or 2 * size <= cap else max(cap // 2, 1))
    weights = min(weights, size)
    # Cost of one perturbed forward pass in each timed search: (time - t_grads) / passes. A pass
    # costs the same with a basis or a random direction, so a rest is extrapolated with the
    # lowest such cost timed at its fdg_chunk (the run least disturbed by other load).
    per_pass: dict[str, float] = {}
    per_chunk: dict[int, list[float]] = {}
    for chunk in args.chunks:
        label = "all" if weights == size else f"first {weights} of {size}"
        log(f"exact FDG search ({label} weights, {2 * weights} passes, chunk {chunk}): compiling")
        exact, compile_s = compile_timed(
            searches.exact(chunk=chunk, weights=None if weights == size else weights), state, batch
        )
        seconds = median_time(
            lambda exact=exact: exact(state, batch),
            jax.block_until_ready,
            repeats,
            warmup=int(warmup),
        )
        rows.append(
            Row(
                f"exact FDG search, {label} weights",
                2 * weights,
                chunk,
                "measured",
                compile_s,
                seconds,
                temp_mib(exact),
            )
        )
        log(f"exact FDG search ({label} weights, chunk {chunk}): {seconds:.2f} s")
        per_pass[f"exact, chunk {chunk}"] = (seconds - t_grads) / (2 * weights)
        per_chunk.setdefault(chunk, []).append(per_pass[f"exact, chunk {chunk}"])
    exact_rows = len(rows)

    key = jax.random.key(args.seed)
    timed = [k for k in args.directions if cap == 0 or 2 * k <= cap]
    if not timed and args.directions:  # time the smallest that fits, to extrapolate from
        timed = [max(min(cap // 2, size), 1)]
    random_search = searches.random(chunk=args.chunk)
    for k in sorted(set(timed)):
        if k > size:
            log(f"skipping k = {k}: more directions than the {size} weights")
            continue
        directions = searches.directions(key, k)
        log(f"random-direction search (k = {k}, {2 * k} passes, chunk {args.chunk}): compiling")
        compiled, compile_s = compile_timed(random_search, state, batch, directions)

        def run(compiled=compiled, k=k):  # the hook draws its directions each time too
            return compiled(state, batch, searches.directions(jax.random.fold_in(key, 1), k))

        seconds = median_time(run, jax.block_until_ready, repeats, warmup=int(warmup))
        per_pass[f"random k = {k}, chunk {args.chunk}"] = (seconds - t_grads) / (2 * k)
        per_chunk.setdefault(args.chunk, []).append(per_pass[f"random k = {k}, chunk {args.chunk}"])
        rows.append(
            Row(
                f"random-direction search, k = {k}",
                2 * k,
                args.chunk,
                "measured",
                compile_s,
                seconds,
                temp_mib(compiled),
            )
        )
        log(f"random-direction search (k = {k}): {seconds:.2f} s")

    def extrapolate(name: str, passes: int, chunk: int) -> Row:
        timings = per_chunk.get(chunk) or [c for costs in per_chunk.values() for c in costs]
        cost = min(timings, default=0.0)
        how = f"extrapolated: t_grads + {passes} x {_fmt(cost, 3)} s per pass"
        if cost <= 0:  # no timed search was slower than its gradients: noise
            cost, how = t_forward, f"extrapolated: t_grads + {passes} x t_forward"
        return Row(name, passes, chunk, how, None, t_grads + passes * cost)

    if weights < size:  # the whole layer
        rows[exact_rows:exact_rows] = [
            extrapolate(f"exact FDG search, all {size} weights", 2 * size, chunk)
            for chunk in args.chunks
        ]
    for k in args.directions:
        if k not in timed and k <= size:
            rows.append(extrapolate(f"random-direction search, k = {k}", 2 * k, args.chunk))

    if args.memory_batch:
        abstract = _abstract_batch(args.memory_batch, args.image_size, args.channels)
        log(f"compiling (not running) the step and searches at batch {args.memory_batch}")
        compiled, compile_s = compile_timed(step, state, abstract)
        memory.append(
            {
                "what": "training step",
                "chunk": None,
                "temp_mib": temp_mib(compiled),
                "s": compile_s,
            }
        )
        for chunk in args.memory_chunks:
            compiled, compile_s = compile_timed(searches.exact(chunk=chunk), state, abstract)
            memory.append(
                {
                    "what": f"exact FDG search (all {size} weights)",
                    "chunk": chunk,
                    "temp_mib": temp_mib(compiled),
                    "s": compile_s,
                }
            )
            log(f"  chunk {chunk}: {_fmt(temp_mib(compiled), 0)} MiB of temporaries")

    check = None
    if args.check_batch:
        log(f"training step and forward pass at batch {args.check_batch}")
        big = _random_batch(rng, args.check_batch, args.image_size, args.channels)
        step_big, _ = compile_timed(step, state, big)
        holder["state"] = state

        def run_big():
            holder["state"], metrics = step_big(holder["state"], big)
            return holder["state"], metrics

        check = {
            "batch": args.check_batch,
            "step": median_time(run_big, jax.block_until_ready, 1, warmup=1),
        }
        state = holder["state"]
        forward_big, _ = compile_timed(jax.jit(searches.forward), state, big)
        check["forward"] = median_time(
            lambda: forward_big(state, big), jax.block_until_ready, 1, warmup=1
        )
        log(
            f"batch {args.check_batch}: step {check['step']:.3f} s, "
            f"forward {check['forward']:.3f} s"
        )

    return {
        "rows": rows,
        "memory": memory,
        "check": check,
        "t_step": t_step,
        "t_forward": t_forward,
        "t_grads": t_grads,
        "size": size,
        "weights": weights,
        "per_pass": per_pass,
        "peak": peak_memory_mib(),
    }


# ----------------------------------------------------------------------------------------------
# Agreement


def _wilson(successes: int, total: int) -> tuple[float, float]:
    """The 95% Wilson interval of a proportion."""
    if total == 0:
        return math.nan, math.nan
    z, p = 1.96, successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def measure_agreement(args: argparse.Namespace) -> dict:
    """Part 2: exact and random-direction decisions at several (state, batch) points of a
    digits_net run that applies the exact search before every epoch, each point decided at the
    run's own temperature and at every temperature of ``--agreement-b-grid``."""
    config = dataclasses.replace(
        train.Config(),
        method="dspike",
        epochs=args.agreement_epochs,
        steps=args.agreement_T,
        batch_size=args.agreement_batch_size,
        seed=args.seed,
    )
    dataset = train.build_dataset(config)
    model = train.build_model(config, dataset)
    mesh = train.data_mesh(jax.devices()[:1])
    steps_per_epoch = dataset.num_train // config.batch_size
    tx = optimizer(config, steps_per_epoch)
    searches = Searches(config, model)
    size = searches.size
    ks = [k for k in args.agreement_directions if k <= size]
    state = train.replicate(TrainState.create(model, tx), mesh)
    data = dataset.train(batch_size=config.batch_size, seed=config.seed)
    chunk = config.fdg_chunk

    def batch_at(index: int) -> dict:
        return train.shard_batch(data[index], mesh)

    log(
        f"part 2: {config.model} (first layer {size} weights, T = {config.steps}, batch "
        f"{config.batch_size}), {args.agreement_epochs} epochs of {steps_per_epoch} steps; "
        f"compiling the exact FDG, the gradients and the sketches for k in {ks}"
    )
    first = batch_at(0)
    grid = [float(temperature(state.rest)), *args.agreement_b_grid]
    reference, compile_s = compile_timed(
        jax.jit(functools.partial(searches.reference, chunk=chunk)), state, first
    )
    gradients, _ = compile_timed(
        jax.jit(searches.candidate_gradients), state, first, jnp.asarray(grid)
    )
    gradients3, _ = compile_timed(jax.jit(searches.gradients), state, first)
    sketch = jax.jit(functools.partial(searches.sketch, chunk=chunk))
    sketches = {
        k: compile_timed(sketch, state, first, searches.directions(jax.random.key(0), k))[0]
        for k in ks
    }
    step = jax.jit(functools.partial(train_step, tx=tx, loss=config.loss), donate_argnums=0)
    times: dict = {"exact": [], "gradients": [], **{k: [] for k in ks}}
    decisions = []  # one per (point, b, estimator, key)
    base_key = jax.random.key(args.seed)
    per_epoch = min(args.agreement_batches, steps_per_epoch)
    points = 0

    def timed(fn, *fn_args):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*fn_args))
        return out, time.perf_counter() - start

    for epoch in range(args.agreement_epochs):
        run_b = float(temperature(state.rest))
        temperatures = jnp.asarray([run_b, *args.agreement_b_grid])
        chosen = None
        for j in range(per_epoch):
            batch = batch_at(epoch * steps_per_epoch + j)
            _, seconds = timed(gradients3, state, batch)
            times["gradients"].append(seconds)
            fdg_vector, seconds = timed(reference, state, batch)
            times["exact"].append(seconds)
            candidates, grads = gradients(state, batch, temperatures)
            exact = np.asarray(candidate_cosines(candidates, grads, fdg_vector))
            best = exact.argmax(axis=1)
            if j == 0:  # what the hook sets for the epoch
                chosen = float(candidates[0, best[0]])
            picks: dict = {}
            for k in ks:
                for rep in range(args.agreement_keys):
                    key = jax.random.fold_in(
                        jax.random.fold_in(jax.random.fold_in(base_key, epoch), j), rep
                    )
                    start = time.perf_counter()  # the hook draws its directions each time too
                    directions = searches.directions(jax.random.fold_in(key, k), k)
                    sketched = jax.block_until_ready(sketches[k](state, batch, directions))
                    times[k].append(time.perf_counter() - start)
                    found = np.asarray(candidate_cosines(candidates, grads, sketched, directions))
                    picks.setdefault(k, []).append(found.argmax(axis=1))
            for row, b in enumerate(np.asarray(temperatures)):
                ranked = np.sort(exact[row][np.isfinite(exact[row])])[::-1]
                decisions.append(
                    {
                        "point": points,
                        "own_b": row == 0,
                        "b": float(b),
                        "cosines": exact[row],
                        "best": int(best[row]),
                        "margin": float(ranked[0] - ranked[1]),
                        "valid": int(np.isfinite(exact[row]).sum()),
                        "picks": {k: [int(p[row]) for p in picks[k]] for k in ks},
                    }
                )
            points += 1
            same = ", ".join(
                f"k={k}: {sum(int(p[0] == best[0]) for p in picks[k])}/{args.agreement_keys}"
                for k in ks
            )
            grid_same = (
                np.mean([np.mean(p[1:] == best[1:]) for k in ks for p in picks[k]])
                if len(grid) > 1
                else math.nan
            )
            log(
                f"epoch {epoch + 1} batch {j + 1}: at the run's b = {run_b:.2f} the exact search "
                f"picks {float(candidates[0, best[0]]):.2f} (cosines "
                f"{', '.join(_fmt(c, 3) for c in exact[0])}); same pick {same}; over the b "
                f"grid {grid_same:.2f} of the random picks agree"
            )
        state = state.replace(rest=with_temperature(state.rest, chosen))  # as the hook does
        losses = []
        for index in range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch):
            state, metrics = step(state, batch_at(index))
            losses.append(metrics["loss"])
        log(
            f"epoch {epoch + 1}/{args.agreement_epochs} trained at b = {chosen:.2f}: "
            f"mean training loss {float(np.mean(jax.device_get(losses))):.4f}"
        )
    return {
        "decisions": decisions,
        "ks": ks,
        "times": {name: statistics.median(values) for name, values in times.items()},
        "points": points,
        "keys": args.agreement_keys,
        "grid": args.agreement_b_grid,
        "size": size,
        "config": config,
        "steps_per_epoch": steps_per_epoch,
        "compile_exact": compile_s,
    }


# ----------------------------------------------------------------------------------------------
# Report


def cost_markdown(cost: dict, args: argparse.Namespace) -> list[str]:
    t_step = cost["t_step"]
    lines = [
        f"### Cost of one temperature search: `{args.model}`, "
        f"{args.image_size}x{args.image_size}x{args.channels}, T = {args.T}, batch {args.batch}",
        "",
        f"First layer: {cost['size']} weights, so the exact FDG is {2 * cost['size']} forward "
        f"passes. Random data; the model in training mode (BN normalises each pass with its own "
        f"batch statistics), as the hook runs it. Compile = ahead-of-time `lower().compile()`; "
        f"the search times are the median of {args.search_repeats} run(s) of the compiled "
        f'search. "x step" = search / training step at batch {args.batch}; "% of epoch" = '
        f"(search / step) / {EPOCH_STEPS}: the share of one CIFAR-10 epoch at the recipe's "
        f"batch {RECIPE.batch_size} ({CIFAR10_TRAIN_IMAGES:,} images, {EPOCH_STEPS} steps), "
        f"assuming the search and the step both cost linearly in the batch (not measured at "
        f'{RECIPE.batch_size} unless a check row below says so). "training x" = how much '
        f"longer training takes with one search before every epoch (1 + share).",
        "",
        f"| measurement | forward passes | fdg_chunk | how | compile (s) | time at batch "
        f"{args.batch} (s) | x step | % of epoch | training x | XLA temporaries (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in cost["rows"]:
        ratio = row.seconds / t_step
        share = ratio / EPOCH_STEPS
        lines.append(
            f"| {row.name} | {'-' if row.passes is None else row.passes} | "
            f"{'-' if row.chunk is None else row.chunk} | {row.how} | {_fmt(row.compile_s, 1)} | "
            f"{_fmt(row.seconds, 3)} | {_fmt(ratio, 2)} | {_fmt(100 * share, 2)} | "
            f"{_fmt(1 + share, 3)} | {_fmt(row.temp_mib, 0)} |"
        )
    per_pass = cost["per_pass"]
    notes = [
        "",
        f"Extrapolation: t_grads = {_fmt(cost['t_grads'], 3)} s (the 3 surrogate gradients); "
        f"an extrapolated row uses the lowest of these costs per forward pass inside the timed "
        f"searches at its fdg_chunk, (time - t_grads) / passes: "
        + ", ".join(f"{name} {_fmt(value, 4)} s" for name, value in per_pass.items())
        + f" (a standalone forward pass: {_fmt(cost['t_forward'], 4)} s).",
    ]
    peak, what = cost["peak"]
    notes.append(f"Peak memory after part 1 ({what}): {_fmt(peak, 0)} MiB.")
    if cost["check"]:
        check = cost["check"]
        small = cost["t_forward"] / t_step
        big = check["forward"] / check["step"]
        exact = cost["t_grads"] / t_step + 2 * cost["size"] * big
        notes.append(
            f"Check at batch {check['batch']}: step {_fmt(check['step'], 3)} s, forward "
            f"{_fmt(check['forward'], 3)} s; forward/step = {_fmt(big, 3)} (at batch "
            f"{args.batch}: {_fmt(small, 3)}). With the forward/step ratio of batch "
            f"{check['batch']}, the exact search is about {_fmt(exact, 0)} steps = "
            f"{_fmt(100 * exact / EPOCH_STEPS, 1)} % of an epoch ({2 * cost['size']} passes "
            f"costed as standalone forward passes at batch {check['batch']}, plus the 3 "
            f"gradients at their batch-{args.batch} ratio to a step)."
        )
    lines += notes
    if cost["memory"]:
        lines += [
            "",
            f"Compiled, not run, at batch {args.memory_batch} (XLA's `memory_analysis`: "
            "temporary buffers, parameters and outputs apart):",
            "",
            "| compiled at batch " + str(args.memory_batch) + " | fdg_chunk | XLA temporaries "
            "(GiB) | compile (s) |",
            "|---|---|---|---|",
        ]
        for item in cost["memory"]:
            temp = None if item["temp_mib"] is None else item["temp_mib"] / 1024
            chunk = "-" if item["chunk"] is None else item["chunk"]
            lines.append(f"| {item['what']} | {chunk} | {_fmt(temp, 1)} | {_fmt(item['s'], 1)} |")
    return lines


def _share(hits: int, total: int) -> str:
    if total == 0:
        return "-"
    low, high = _wilson(hits, total)
    return f"{hits / total:.3f} ({hits}/{total}; {low:.2f}-{high:.2f})"


def agreement_markdown(result: dict) -> list[str]:
    config = result["config"]
    decisions = result["decisions"]
    own = [d for d in decisions if d["own_b"]]
    grid = [d for d in decisions if not d["own_b"]]
    median_margin = float(np.median([d["margin"] for d in grid])) if grid else math.nan
    close = [d for d in grid if d["margin"] <= median_margin]
    times = result["times"]
    exact_seconds = times["exact"] + times["gradients"]
    names = ("b", "b+0.2", "b-0.2")
    counts = np.bincount([d["best"] for d in grid], minlength=3) if grid else np.zeros(3, int)
    lines = [
        f"### Agreement with the exact search: `{config.model}` on the digits",
        "",
        f"First layer {result['size']} weights (exact FDG: {2 * result['size']} passes); T = "
        f"{config.steps}, batch {config.batch_size}, {config.epochs} epochs of "
        f"{result['steps_per_epoch']} steps ({config.optimizer}, lr {config.lr:g}), the exact "
        f'search applied before every epoch as `method="dspike"` does. {result["points"]} '
        f"points: the first {result['points'] // config.epochs} batch(es) of each epoch at the "
        f"epoch-start state. Each point is decided at the run's own b (what the hook decides) "
        f"and at every b of the grid {', '.join(f'{b:g}' for b in result['grid'])} (the FDG "
        f"and its sketches do not depend on b, so these cost only 3 gradients each; "
        f"decisions at one point share its FDG and sketch, so they are correlated and their "
        f"intervals optimistic). Random directions: {result['keys']} key(s) per k and point. "
        f"Each cell: the share of decisions picking the exact search's candidate (b, b+0.2, "
        f'b-0.2), (hits/total; 95% Wilson interval). "closer half": the grid decisions '
        f"whose exact best and second-best cosines differ by at most the median gap "
        f'({_fmt(median_margin, 4)}). "cosine lost": the exact FDG\'s cosine with the exact '
        f"pick minus its cosine with the estimator's pick, mean over all decisions. Times: "
        f"medians of the FDG (or sketch, with drawing its directions) plus the 3 surrogate "
        f"gradients ({_fmt(times['gradients'], 3)} s), i.e. one search.",
        "",
        "On the grid the exact search picks "
        + ", ".join(f"{name} {count}" for name, count in zip(names, counts, strict=True))
        + f" times of {len(grid)}; at the run's own b it picks "
        + ", ".join(
            f"{name} {count}"
            for name, count in zip(
                names, np.bincount([d["best"] for d in own], minlength=3), strict=True
            )
        )
        + f" times of {len(own)}.",
        "",
        "| search | forward passes | time (s) | cost vs exact | agreement at the run's b | "
        "over the b grid | closer half of the grid | cosine lost |",
        "|---|---|---|---|---|---|---|---|",
        f"| exact FDG (all {result['size']} weights) | {2 * result['size']} | "
        f"{_fmt(exact_seconds, 3)} | 1.000 | (reference) | (reference) | (reference) | 0 |",
    ]

    def hits(group, k):
        return sum(pick == d["best"] for d in group for pick in d["picks"][k])

    def lost(pick_of):
        return float(
            np.mean([d["cosines"][d["best"]] - d["cosines"][pick_of(d)] for d in decisions])
        )

    for k in result["ks"]:
        seconds = times[k] + times["gradients"]
        keys = result["keys"]
        regret = float(
            np.mean(
                [
                    d["cosines"][d["best"]] - d["cosines"][pick]
                    for d in decisions
                    for pick in d["picks"][k]
                ]
            )
        )
        lines.append(
            f"| random directions, k = {k} | {2 * k} | {_fmt(seconds, 3)} | "
            f"{_fmt(seconds / exact_seconds, 3)} | {_share(hits(own, k), keys * len(own))} | "
            f"{_share(hits(grid, k), keys * len(grid))} | "
            f"{_share(hits(close, k), keys * len(close))} | {_fmt(regret, 4)} |"
        )
    for name, pick in (("keep b", 0), ("always b+0.2", 1)):

        def count(group, pick=pick):
            return sum(d["best"] == pick for d in group)

        lines.append(
            f"| baseline: {name} (no search) | 0 | - | - | {_share(count(own), len(own))} | "
            f"{_share(count(grid), len(grid))} | {_share(count(close), len(close))} | "
            f"{_fmt(lost(lambda d, pick=pick: pick), 4)} |"
        )

    def uniform(group):
        return _fmt(float(np.mean([1 / d["valid"] for d in group])), 3) if group else "-"

    uniform_lost = float(
        np.mean(
            [
                d["cosines"][d["best"]] - np.mean(d["cosines"][np.isfinite(d["cosines"])])
                for d in decisions
            ]
        )
    )
    lines.append(
        f"| baseline: a valid candidate at random (expected) | 0 | - | - | {uniform(own)} | "
        f"{uniform(grid)} | {uniform(close)} | {_fmt(uniform_lost, 4)} |"
    )
    return lines


def main(argv: Sequence[str] | None = None) -> dict:
    command = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(command)
    run = start_jax_run()
    cost = measure_cost(args)
    agreement = measure_agreement(args) if args.agreement else None
    wall = elapsed()
    body = cost_markdown(cost, args)
    if agreement is not None:
        body += ["", *agreement_markdown(agreement)]
    text = publish(
        "fdg_search",
        command,
        body,
        results=args.results,
        run=run,
    )
    return {"cost": cost, "agreement": agreement, "markdown": text, "wall_seconds": wall}


if __name__ == "__main__":
    main()
