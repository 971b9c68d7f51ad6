"""What Dspike's temperature search costs, against a training step and an epoch.

    python -m benchmarks.fdg_cost [--batch B] [--T 6] [--directions 16,64,256] [--chunks 1,16]
        [--max-passes P] [--fdg-weights N] [--results benchmarks/RESULTS.md]

The CIFAR-10 recipe ``dspike_cifar10`` of :mod:`jsnn.recipes` (``resnet18_modified``, 32x32x3,
T = 6, random data). On the current device, at a small batch B (8 on an accelerator; 2 on a
CPU, where a ResNet-18 step at batch 8 already takes about 10 s): one training step
(:func:`jsnn.train.make_train_step`, median of ``--repeats`` after a warm-up), one forward pass
of the loss, the three surrogate gradients of the first layer (b, b + 0.2, b - 0.2; the fixed
part of every search, :func:`jsnn.methods.fdg.candidate_gradients`), the search with the exact
finite-difference gradient (FDG, Dspike Eq. 10: 2 forward passes per weight of the first layer,
3456 for ResNet-18) and with the random-direction estimator (2k passes), each the hook's
:func:`jsnn.methods.fdg.search_temperature` on :func:`jsnn.methods.dspike.searched_loss`,
compiled ahead of time (compile reported apart) and then run. A search whose forward passes
exceed ``--max-passes`` is not run whole: the exact FDG is timed on its first ``--fdg-weights``
weights (the same code, fewer weights) and the rest is extrapolated linearly, ``t = t_grads +
passes x t_pass`` with ``t_grads`` the measured surrogate gradients and ``t_pass`` the lowest
cost per pass, ``(time - t_grads) / passes``, of the timed searches at the same chunk (a pass
costs the same with a basis or a random direction; the lowest is the run least disturbed by
other load); every such row says "extrapolated". XLA's buffer sizes of the compiled search
(``memory_analysis``) are reported per chunk at B and, compiled only (never run), at the
recipe's batch 128.

Each search is reported as a multiple of one training step at the same batch, and as a share
of one CIFAR-10 epoch at the recipe's batch 128 (50,000 images: 390 steps), computed as
``(search(B) / step(B)) / 390``: the search runs on ONE batch and both it and a step cost about
linearly in the batch, so their ratio is taken as independent of the batch (``--check-batch
128`` times a step and a forward pass at 128, one run each after a warm-up, to check the
forward/step ratio there).

Appends a section (date, device, versions, commit, command, tables) to ``--results`` and prints
the tables. Seeds are fixed (``--seed``); timings on a shared machine are noisy, so the load
average is recorded with them. :mod:`benchmarks.fdg_agreement` measures how often the cheaper
estimator decides as the exact search does.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from collections.abc import Callable, Sequence
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
    fmt,
    log,
    median_time,
    peak_memory_mib,
    positive_ints,
    publish,
    start_jax_run,
    temp_mib,
)
from jsnn import losses, recipes, run, train
from jsnn.config import Config
from jsnn.methods import dspike, fdg

RECIPE = recipes.RECIPES["dspike_cifar10"]
CIFAR10_TRAIN_IMAGES = 50_000
EPOCH_STEPS = CIFAR10_TRAIN_IMAGES // RECIPE.train.batch_size  # 390


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fdg_cost",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        epilog="Defaults marked 'auto' depend on the device: the first value on a CPU, the "
        "second on an accelerator.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--model", default=RECIPE.model.name, help="model of the timed searches")
    add("--image-size", type=int, default=32, help="input height and width (CIFAR: 32)")
    add("--channels", type=int, default=3, help="input channels (CIFAR: 3)")
    add("--T", type=int, default=RECIPE.model.time_steps, help="time steps")
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
        default=RECIPE.method.chunk,
        help="method.chunk of the random-direction searches (the recipe's by default)",
    )
    add(
        "--chunks",
        type=positive_ints,
        default=(1, 16),
        help="method.chunk values the exact search is timed at",
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
        default=RECIPE.train.batch_size,
        help="batch at which the step and the searches are compiled (not run) for XLA's buffer "
        "sizes (0: skip)",
    )
    add(
        "--memory-chunks",
        type=positive_ints,
        default=(1, 4, 16),
        help="method.chunk values compiled at --memory-batch",
    )
    add(
        "--check-batch",
        type=int,
        default=None,
        help="also time a step and a forward pass at this batch, to check that their ratio "
        "does not depend on the batch (0: skip; auto: 0 / 128)",
    )
    add("--seed", type=int, default=0, help="model, data and direction seed")
    add("--results", type=Path, default=RESULTS, help="markdown file the section is appended to")
    args = parser.parse_args(argv)
    for name in ("image_size", "channels", "T", "repeats", "chunk"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("batch", "search_repeats"):
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
        ("check_batch", 0, RECIPE.train.batch_size),
    ):
        if getattr(args, name) is None:
            setattr(args, name, on_cpu if cpu else elsewhere)
    return args


def config_for(args: argparse.Namespace) -> Config:
    """The recipe at the benchmarked model, T and chunk: one spiking run, no ANN or TIT."""
    return RECIPE.override(
        {
            "model.name": args.model,
            "model.time_steps": args.T,
            "method.chunk": args.chunk,
            "train.seed": args.seed,
            "init.ann": False,
            "init.tit_steps": (),
        }
    )


# ----------------------------------------------------------------------------------------------
# Measuring


class Search:
    """The hook's search (:func:`jsnn.methods.dspike.temperature_search`) on a train state and
    a batch, in the parts part 1 times apart: the same loss (:func:`~jsnn.methods.dspike.
    searched_loss`: training mode, the temperature put into every Dspike layer) and the same
    :mod:`jsnn.methods.fdg` parts; optionally only the first ``weights`` weights perturbed."""

    def __init__(self, config: Config, model: nnx.Module):
        self.method = config.method
        self.loss = self.method.loss(config) or losses.get(config.train.loss)
        self.prefix = dspike.searched_path(model, self.method.layer)
        selected, _ = dspike.select_params(nnx.state(model, nnx.Param), self.prefix)
        self.size = sum(leaf.size for leaf in selected)

    def _loss(self, state: train.TrainState, batch: dict, weights: int | None = None):
        """``(loss(v, b), v, b)``: the searched loss of the first ``weights`` (all) flattened
        weights, their values and the state's temperature."""
        model = state.model()
        loss_of, selected = dspike.searched_loss(model, batch, self.prefix, self.loss)
        flat, unravel = ravel_pytree(selected)
        count = flat.size if weights is None else weights

        def loss(v, b):
            full = v if count == flat.size else jnp.concatenate([v, flat[count:]])
            return loss_of(unravel(full), b)

        return loss, flat[:count], dspike.temperature(model)

    def forward(self, state: train.TrainState, batch: dict) -> jax.Array:
        """One forward pass of the loss, as each perturbed pass of the FDG does."""
        loss, w, b = self._loss(state, batch)
        return loss(w, b)

    def gradients(self, state: train.TrainState, batch: dict) -> jax.Array:
        """The surrogate gradients for ``b``, ``b + b_step``, ``b - b_step`` (one vmap)."""
        loss, w, b = self._loss(state, batch)
        temperatures = fdg.candidates(jnp.asarray(b, w.dtype), self.method.b_step)
        return fdg.candidate_gradients(loss, w, temperatures)

    def search(self, state, batch, directions=None, *, chunk: int, weights: int | None = None):
        """One search: the exact FDG (``directions=None``) over all weights or the first
        ``weights``, or the random-direction estimator on ``directions``."""
        loss, w, b = self._loss(state, batch, weights)
        return fdg.search_temperature(
            loss,
            w,
            b,
            step=self.method.b_step,
            eps=self.method.eps,
            directions=directions,
            chunk_size=chunk,
        )

    def exact(self, *, chunk: int, weights: int | None = None):
        return jax.jit(functools.partial(self.search, chunk=chunk, weights=weights))

    def random(self, *, chunk: int):
        return jax.jit(functools.partial(self.search, chunk=chunk))

    def directions(self, key: jax.Array, count: int) -> jax.Array:
        return fdg.random_directions(key, self.size, count)


@dataclasses.dataclass
class Row:
    name: str
    passes: int | None
    chunk: int | None
    how: str
    compile_s: float | None
    seconds: float
    temp_mib: float | None = None


def timed_row(
    name: str,
    jitted,
    arguments: tuple,
    *,
    repeats: int,
    warmup: int,
    passes: int | None = None,
    chunk: int | None = None,
    call: Callable | None = None,
) -> Row:
    """``jitted`` compiled ahead of time for ``arguments``, then the median of ``repeats``
    runs after ``warmup`` untimed ones, each waited for; ``call(compiled)`` runs it instead of
    ``compiled(*arguments)`` when given (a donated state to carry over, fresh directions)."""
    compiled, compile_s = compile_timed(jitted, *arguments)
    run_once = functools.partial(call, compiled) if call else lambda: compiled(*arguments)
    seconds = median_time(run_once, jax.block_until_ready, repeats, warmup=warmup)
    log(f"{name}: {seconds:.3f} s (compile {compile_s:.1f} s)")
    return Row(name, passes, chunk, "measured", compile_s, seconds, temp_mib(compiled))


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
    """The rows of the cost table and what the notes need."""
    config = config_for(args)
    shape = DataShape(num_classes=10, input_shape=(args.image_size, args.image_size, args.channels))
    log(f"building {args.model} (T = {args.T}) for {shape.input_shape} inputs")
    model = run.build_model(config, shape)
    mesh = train.data_mesh(jax.devices()[:1])
    tx = train.optimizer(config.train, EPOCH_STEPS)
    search = Search(config, model)
    size = search.size
    state = train.replicate(train.TrainState.create(model, tx), mesh)
    rng = np.random.default_rng(args.seed)
    batch = _random_batch(rng, args.batch, args.image_size, args.channels)
    memory: list[dict] = []
    cap = args.max_passes
    repeats, warmup = args.search_repeats, int(args.search_repeats > 1)

    step = train.make_train_step(tx, search.loss, platform=mesh.devices.flat[0].platform)
    holder = {"state": state}

    def run_step(compiled, batch=batch):  # the step donates its state: carry it over
        holder["state"], metrics = compiled(holder["state"], batch)
        return holder["state"], metrics

    rows = [
        timed_row(
            f"training step (median of {args.repeats})",
            step,
            (state, batch),
            repeats=args.repeats,
            warmup=1,
            call=run_step,
        )
    ]
    state = holder["state"]
    t_step = rows[0].seconds
    rows.append(
        timed_row(
            f"one forward pass of the loss (median of {args.repeats})",
            jax.jit(search.forward),
            (state, batch),
            repeats=args.repeats,
            warmup=1,
            passes=1,
        )
    )
    t_forward = rows[-1].seconds
    rows.append(
        timed_row(
            "the 3 surrogate gradients alone (b, b+0.2, b-0.2; fixed part of a search)",
            jax.jit(search.gradients),
            (state, batch),
            repeats=repeats,
            warmup=warmup,
            passes=0,
        )
    )
    t_grads = rows[-1].seconds

    # The exact FDG: all weights when they fit in the cap, else the first `weights` of them.
    weights = args.fdg_weights or (size if cap == 0 or 2 * size <= cap else max(cap // 2, 1))
    weights = min(weights, size)
    # Cost of one perturbed forward pass in each timed search: (time - t_grads) / passes. A pass
    # costs the same with a basis or a random direction, so a rest is extrapolated with the
    # lowest such cost timed at its chunk (the run least disturbed by other load).
    per_pass: dict[str, float] = {}
    per_chunk: dict[int, list[float]] = {}
    label = "all" if weights == size else f"first {weights} of {size}"
    for chunk in args.chunks:
        row = timed_row(
            f"exact FDG search, {label} weights",
            search.exact(chunk=chunk, weights=None if weights == size else weights),
            (state, batch),
            repeats=repeats,
            warmup=warmup,
            passes=2 * weights,
            chunk=chunk,
        )
        rows.append(row)
        per_pass[f"exact, chunk {chunk}"] = (row.seconds - t_grads) / (2 * weights)
        per_chunk.setdefault(chunk, []).append(per_pass[f"exact, chunk {chunk}"])
    exact_rows = len(rows)

    key = jax.random.key(args.seed)
    timed = [k for k in args.directions if cap == 0 or 2 * k <= cap]
    if not timed and args.directions:  # time the smallest that fits, to extrapolate from
        timed = [max(min(cap // 2, size), 1)]
    random_search = search.random(chunk=args.chunk)
    for k in sorted(set(timed)):
        if k > size:
            log(f"skipping k = {k}: more directions than the {size} weights")
            continue

        def run_random(compiled, k=k):  # the hook draws its directions each time too
            return compiled(state, batch, search.directions(jax.random.fold_in(key, 1), k))

        row = timed_row(
            f"random-direction search, k = {k}",
            random_search,
            (state, batch, search.directions(key, k)),
            repeats=repeats,
            warmup=warmup,
            passes=2 * k,
            chunk=args.chunk,
            call=run_random,
        )
        rows.append(row)
        per_pass[f"random k = {k}, chunk {args.chunk}"] = (row.seconds - t_grads) / (2 * k)
        per_chunk.setdefault(args.chunk, []).append(per_pass[f"random k = {k}, chunk {args.chunk}"])

    def extrapolate(name: str, passes: int, chunk: int) -> Row:
        timings = per_chunk.get(chunk) or [c for costs in per_chunk.values() for c in costs]
        cost = min(timings, default=0.0)
        how = f"extrapolated: t_grads + {passes} x {fmt(cost, 3)} s per pass"
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
            {"what": "training step", "chunk": None, "temp_mib": temp_mib(compiled), "s": compile_s}
        )
        for chunk in args.memory_chunks:
            compiled, compile_s = compile_timed(search.exact(chunk=chunk), state, abstract)
            memory.append(
                {
                    "what": f"exact FDG search (all {size} weights)",
                    "chunk": chunk,
                    "temp_mib": temp_mib(compiled),
                    "s": compile_s,
                }
            )
            log(f"  chunk {chunk}: {fmt(temp_mib(compiled), 0)} MiB of temporaries")

    check = None
    if args.check_batch:
        log(f"training step and forward pass at batch {args.check_batch}")
        big = _random_batch(rng, args.check_batch, args.image_size, args.channels)
        holder["state"] = state
        big_step = functools.partial(run_step, batch=big)
        check = {
            "batch": args.check_batch,
            "step": timed_row("step", step, (state, big), repeats=1, warmup=1, call=big_step),
        }
        state = holder["state"]
        check["forward"] = timed_row(
            "forward", jax.jit(search.forward), (state, big), repeats=1, warmup=1
        )
        check = {name: getattr(value, "seconds", value) for name, value in check.items()}

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
        f"batch {RECIPE.train.batch_size} ({CIFAR10_TRAIN_IMAGES:,} images, {EPOCH_STEPS} steps), "
        f"assuming the search and the step both cost linearly in the batch (not measured at "
        f'{RECIPE.train.batch_size} unless a check row below says so). "training x" = how much '
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
            f"{'-' if row.chunk is None else row.chunk} | {row.how} | {fmt(row.compile_s, 1)} | "
            f"{fmt(row.seconds, 3)} | {fmt(ratio, 2)} | {fmt(100 * share, 2)} | "
            f"{fmt(1 + share, 3)} | {fmt(row.temp_mib, 0)} |"
        )
    per_pass = cost["per_pass"]
    notes = [
        "",
        f"Extrapolation: t_grads = {fmt(cost['t_grads'], 3)} s (the 3 surrogate gradients); "
        f"an extrapolated row uses the lowest of these costs per forward pass inside the timed "
        f"searches at its fdg_chunk, (time - t_grads) / passes: "
        + ", ".join(f"{name} {fmt(value, 4)} s" for name, value in per_pass.items())
        + f" (a standalone forward pass: {fmt(cost['t_forward'], 4)} s).",
    ]
    peak, what = cost["peak"]
    notes.append(f"Peak memory after part 1 ({what}): {fmt(peak, 0)} MiB.")
    if cost["check"]:
        check = cost["check"]
        small = cost["t_forward"] / t_step
        big = check["forward"] / check["step"]
        exact = cost["t_grads"] / t_step + 2 * cost["size"] * big
        notes.append(
            f"Check at batch {check['batch']}: step {fmt(check['step'], 3)} s, forward "
            f"{fmt(check['forward'], 3)} s; forward/step = {fmt(big, 3)} (at batch "
            f"{args.batch}: {fmt(small, 3)}). With the forward/step ratio of batch "
            f"{check['batch']}, the exact search is about {fmt(exact, 0)} steps = "
            f"{fmt(100 * exact / EPOCH_STEPS, 1)} % of an epoch ({2 * cost['size']} passes "
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
            lines.append(f"| {item['what']} | {chunk} | {fmt(temp, 1)} | {fmt(item['s'], 1)} |")
    return lines


def main(argv: Sequence[str] | None = None) -> dict:
    command = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(command)
    started = start_jax_run()
    cost = measure_cost(args)
    wall = elapsed()
    text = publish(
        "fdg_cost", command, cost_markdown(cost, args), results=args.results, run=started
    )
    return {"cost": cost, "markdown": text, "wall_seconds": wall}


if __name__ == "__main__":
    main()
