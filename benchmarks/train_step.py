"""One training step of the spiking ResNet-18 against its ANN twin, and its memory against T.

    python -m benchmarks.train_step [--T 4,6] [--batch B] [--repeats N] [--remat none,block,conv]
        [--dtype float32,bfloat16] [--memory-T 4,8,16,32,64] [--memory-batch 128]
        [--budget-gib 16] [--check 16,64] [--results benchmarks/RESULTS.md]

The step is the trainer's own: the model from :func:`jsnn.run.build_model` with the CIFAR-10
recipe ``dspike_cifar10`` of :mod:`jsnn.recipes` (``resnet18_modified``, 32x32x3 inputs, 10
classes, LIF neurons, tdBN, SGD with momentum, mean-output cross-entropy) and the benchmarked
``model.time_steps``, ``model.remat`` and ``train.compute_dtype``; its
:class:`~jsnn.train.TrainState` and :func:`~jsnn.train.optimizer`; the step
:func:`jsnn.train.make_train_step` makes (state donated, the trainer's XLA options of
:func:`jsnn.train.compiler_options`). Inputs are random images and labels, the images cast to
the compute dtype as the training loop casts them.

Part 1, step time. For each T, remat and dtype: the spiking model at batch B (static images,
direct-encoded to T steps, so every layer runs on B*T folded samples) and its ANN twin (the
same model with ``spiking=False``: ReLU, time-folded BN, the same remat and dtype) at batch
B*T, i.e. the same images through the same convolutions. All steps of one T are compiled
ahead of time (compile time reported apart) and run once untimed; then they are timed in
``--repeats`` rounds of one call each, so that a change of load on a shared machine hits them
alike, every call waited for with ``jax.block_until_ready``. The tables give medians. SNN/ANN
is the ratio of the two medians; "vs no remat" and "vs float32" divide a step's median by the
same model's step without remat or in float32 at the same T. XLA temporaries: the compiled
step's ``memory_analysis().temp_size_in_bytes``.

Part 2, memory against T. The spiking step compiled, never run, at ``--memory-batch`` (the
recipe's 128) for each T of ``--memory-T`` and each remat, in float32: XLA's temporaries, and
the step's total, temporaries + arguments + outputs - the outputs that alias the donated
arguments. These compiles use XLA's lowest backend (LLVM) optimisation level, which halves
their time; buffer assignment runs before code generation, so the sizes do not depend on it.

Part 3, the largest T whose step total fits in ``--budget-gib``, per remat, found by compiling:
from the bracket the sweep gives, a guess interpolated linearly in T (memory grows linearly with
T) is compiled and replaces the bracket's end it falls on, until the fitting T and the T after
it have both been compiled (up to ``--max-T``).

Part 4, the check: XLA's temporaries at the larger T of ``--check`` (default 64) with the remat
that needs least, against the smaller T (16) with the naive scan: the same model and step with
every LIF layer the textbook ``lax.scan`` over time differentiated by JAX's autodiff (which
keeps every step's intermediates; :class:`ScanLIF`, the core's reference
:func:`jsnn.neuron.lif_scan`), without remat. Also against jsnn's own
step at the smaller T without remat, and what the remat costs in time, its spiking step's median
over the step without remat at the first T of part 1.

On a CPU every number is the CPU compiler's: an accelerator fuses, schedules and picks
convolution algorithms differently, so memory there is an estimate. A CPU step of the
ResNet-18 at batch 8*T takes seconds, so the CPU default batch is 2 (2*T folded samples for the
spiking step, 2*T images for the twin); the whole default run then takes about ten minutes,
most of it compiling. Memory is compiled at the recipe's batch regardless (it grows linearly
with the batch).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import (
    RESULTS,
    DataShape,
    compile_timed,
    elapsed,
    fmt,
    log,
    positive_ints,
    publish,
    start_jax_run,
    subset_of,
    temp_mib,
    timed_runs,
)
from jsnn import LIF, losses, recipes, train
from jsnn.config import Config
from jsnn.methods.surrogate import PlainSurrogate
from jsnn.models import REMAT_KINDS
from jsnn.neuron import LIFParams, lif_scan
from jsnn.run import build_model

RECIPE = recipes.RECIPES["dspike_cifar10"]
DTYPES = ("float32", "bfloat16")
# XLA's lowest backend optimisation level: the memory sweep's compiles take half the time and
# report the same buffer sizes (buffer assignment runs before code generation).
MEMORY_ONLY = {"xla_backend_optimization_level": 0}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.train_step",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        epilog="Defaults marked 'auto' depend on the device: the first value on a CPU, the "
        "second on an accelerator.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--model", default=RECIPE.model.name, help="model of the zoo (a smaller one for smoke runs)"
    )
    add("--image-size", type=int, default=32, help="input height and width (CIFAR: 32)")
    add("--channels", type=int, default=3, help="input channels (CIFAR: 3)")
    add("--T", type=positive_ints, default=(4, 6), help="time steps of the timed steps")
    add("--batch", type=int, default=None, help="spiking batch B of the timings (auto: 2 / 8)")
    add("--repeats", type=int, default=None, help="timed rounds (auto: 5 / 10)")
    add(
        "--remat",
        type=subset_of(REMAT_KINDS),
        default=REMAT_KINDS,
        help=f"remat options to measure, from {REMAT_KINDS}",
    )
    add("--dtype", type=subset_of(DTYPES), default=DTYPES, help="compute dtypes of the timings")
    add(
        "--memory-T",
        type=positive_ints,
        default=(4, 8, 16, 32, 64),
        help="T of the memory sweep (compiled only)",
    )
    add(
        "--memory-batch",
        type=int,
        default=RECIPE.train.batch_size,
        help="batch of the memory sweep",
    )
    add("--budget-gib", type=float, default=16.0, help="memory budget of the largest-T search")
    add("--max-T", type=int, default=1024, help="the largest-T search stops here")
    add(
        "--check",
        type=positive_ints,
        default=(16, 64),
        help="T_naive,T_remat: does the step at T_remat with the best remat need no more XLA "
        "temporaries than the step at T_naive without remat?",
    )
    add("--seed", type=int, default=0, help="model and data seed")
    add("--results", type=Path, default=RESULTS, help="markdown file the section is appended to")
    args = parser.parse_args(argv)
    for name in ("image_size", "channels", "memory_batch", "max_T"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("batch", "repeats"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if not args.budget_gib > 0:
        parser.error(f"--budget-gib must be > 0, got {args.budget_gib}")
    if len(args.check) != 2 or args.check[0] >= args.check[1]:
        parser.error(f"--check must be two increasing T, got {args.check}")
    cpu = jax.devices()[0].platform == "cpu"
    for name, on_cpu, elsewhere in (("batch", 2, 8), ("repeats", 5, 10)):
        if getattr(args, name) is None:
            setattr(args, name, on_cpu if cpu else elsewhere)
    return args


# ----------------------------------------------------------------------------------------------
# Measuring


@dataclasses.dataclass
class Step:
    """One compiled training step and what it measured; ``call`` runs it (timed steps only)."""

    compile_s: float
    temp_mib: float | None
    total_mib: float | None
    call: Callable[[], object] | None = None
    times: list[float] = dataclasses.field(default_factory=list)
    loss: float | None = None

    @property
    def seconds(self) -> float:
        return statistics.median(self.times)


class ScanLIF(LIF):
    """The naive LIF layer of the memory check: :func:`jsnn.neuron.lif_scan`, the core's
    ``lax.scan`` of :func:`jsnn.neuron.lif_step` differentiated by autodiff, the way a
    straightforward JAX implementation writes it (spyx's, for one). The same neuron as
    :class:`jsnn.LIF` (its parameters and state, the same spikes and gradients); only what the
    backward pass keeps differs."""

    def __call__(self, currents: jax.Array) -> jax.Array:
        params = LIFParams(
            self.decay, self.v_th[...], self.surrogate.get_value(), self.reset, self.detach_reset
        )
        return lif_scan(currents, params)[1]


@dataclasses.dataclass(frozen=True)
class NaiveScan(PlainSurrogate):
    """Plain surrogate training with every LIF layer a :class:`ScanLIF` (the method's neuron
    factory: the one ``config.model`` makes, with the class swapped)."""

    name = "naive_scan"

    def neurons(self, config, neuron):
        if not (isinstance(neuron, functools.partial) and neuron.func is LIF):
            raise TypeError(f"the naive scan replaces jsnn.LIF neurons, got {neuron!r}")
        return functools.partial(ScanLIF, *neuron.args, **neuron.keywords)


def _config(args, *, steps: int, remat: str, dtype: str, spiking: bool) -> Config:
    return RECIPE.override(
        {
            "model.name": args.model,
            "model.time_steps": steps,
            "model.remat": remat,
            "model.spiking": spiking,
            "train.compute_dtype": dtype,
            "train.seed": args.seed,
            "method.name": "surrogate",  # Dspike's search runs between epochs, not in the step
            "init.ann": False,
            "init.tit_steps": (),
        }
    )


def _total_mib(compiled) -> float | None:
    """Temporaries + arguments + outputs - outputs aliasing donated arguments, in MiB."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend reports it
        return None
    if m is None:
        return None
    size = m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
    return (size - m.alias_size_in_bytes) / 2**20


def _batch(args, batch: int, dtype: str, *, abstract: bool) -> dict:
    shape = (batch, args.image_size, args.image_size, args.channels)
    if abstract:
        return {
            "image": jax.ShapeDtypeStruct(shape, jnp.dtype(dtype)),
            "label": jax.ShapeDtypeStruct((batch,), jnp.int32),
        }
    rng = np.random.default_rng(args.seed)
    return {
        "image": jnp.asarray(rng.random(shape, dtype=np.float32)).astype(dtype),
        "label": jnp.asarray(rng.integers(0, 10, batch).astype(np.int32)),
    }


def compile_step(args, config: Config, batch: int, *, run: bool, scan_lif: bool = False) -> Step:
    """The trainer's jitted step for ``config`` at ``batch``, compiled; with ``run``, on real
    data and ready to be called (``Step.call``), else on abstract shapes. ``scan_lif``: with
    :class:`ScanLIF` layers."""
    shape = DataShape(num_classes=10, input_shape=(args.image_size, args.image_size, args.channels))
    if scan_lif:
        config = dataclasses.replace(config, method=NaiveScan())
    model = build_model(config, shape)
    tx = train.optimizer(config.train, steps_per_epoch=1000)
    state = train.TrainState.create(model, tx)
    loss = losses.get(config.train.loss)
    jitted = train.make_train_step(tx, loss, platform=jax.devices()[0].platform)
    data = _batch(args, batch, config.train.compute_dtype, abstract=not run)
    options = None if run else MEMORY_ONLY
    compiled, compile_s = compile_timed(jitted, state, data, compiler_options=options)
    step = Step(compile_s, temp_mib(compiled), _total_mib(compiled))
    if run:
        holder = {"state": state}

        def call():
            holder["state"], metrics = compiled(holder["state"], data)
            step.loss = metrics["loss"]
            return holder["state"], metrics

        step.call = call
    return step


def measure_times(args) -> list[dict]:
    """Part 1: one row per T, remat and dtype, the spiking step and its twin's. All steps of
    one T are compiled first, then timed in turns (one call of each per round), so that a
    change in the machine's load falls on all of them alike."""
    rows = []
    for steps in args.T:
        timed, first = [], len(rows)
        for remat in args.remat:
            for dtype in args.dtype:
                row = {"T": steps, "remat": remat, "dtype": dtype}
                for spiking, batch in ((True, args.batch), (False, args.batch * steps)):
                    kind = "snn" if spiking else "ann"
                    config = _config(args, steps=steps, remat=remat, dtype=dtype, spiking=spiking)
                    row[kind] = step = compile_step(args, config, batch, run=True)
                    timed.append(step)
                    log(
                        f"T = {steps}, remat {remat}, {dtype}: {kind.upper()} at batch {batch} "
                        f"compiled in {step.compile_s:.1f} s (temporaries "
                        f"{fmt(step.temp_mib, 0)} MiB)"
                    )
                rows.append(row)
        for step in timed:  # warm-up
            jax.block_until_ready(step.call())
        for round_ in range(args.repeats):
            for step in timed:
                step.times += timed_runs(step.call, jax.block_until_ready, 1, warmup=0)
            log(f"T = {steps}: timing round {round_ + 1}/{args.repeats} done")
        for step in timed:
            if not np.isfinite(float(step.loss)):
                raise FloatingPointError(f"a step at T = {steps} gave the loss {step.loss}")
            step.call = None  # frees its executable and state
        for row in rows[first:]:
            log(
                f"T = {steps}, remat {row['remat']}, {row['dtype']}: SNN {row['snn'].seconds:.3f}"
                f" s, ANN {row['ann'].seconds:.3f} s"
            )
    return rows


class MemorySweep:
    """Parts 2 to 4: the spiking step compiled at ``--memory-batch`` for any T and remat (or
    with :class:`ScanLIF` layers), once."""

    def __init__(self, args):
        self.args = args
        self.steps: dict[tuple[str, int], Step] = {}
        self.naive_scan: dict[int, Step] = {}

    def __call__(self, remat: str, steps: int, *, scan_lif: bool = False) -> Step:
        known, key = (self.naive_scan, steps) if scan_lif else (self.steps, (remat, steps))
        if key not in known:
            config = _config(self.args, steps=steps, remat=remat, dtype="float32", spiking=True)
            batch = self.args.memory_batch
            step = compile_step(self.args, config, batch, run=False, scan_lif=scan_lif)
            what = "naive scan" if scan_lif else f"remat {remat}"
            log(
                f"memory: T = {steps}, {what}: temporaries {fmt(step.temp_mib, 0)} "
                f"MiB, total {fmt(step.total_mib, 0)} MiB (compile {step.compile_s:.1f} s)"
            )
            known[key] = step
        return known[key]

    def largest_t(self, remat: str) -> dict:
        """The largest T whose step total fits in the budget, by compiling."""
        budget, cap = self.args.budget_gib * 1024, self.args.max_T

        def total(steps: int) -> float:
            return self(remat, steps).total_mib

        known = {s: step.total_mib for (r, s), step in self.steps.items() if r == remat}
        low = max((s for s, mib in known.items() if mib <= budget), default=0)
        if low == 0:  # does anything fit?
            if total(1) > budget:
                return {"remat": remat, "T": 0, "total": None, "next": total(1)}
            low = 1
        high = min((s for s, mib in known.items() if mib > budget and s > low), default=None)
        while high is None:  # extrapolate upward, doubling
            if low >= cap:
                return {"remat": remat, "T": low, "total": total(low), "next": None}
            probe = min(2 * low, cap)
            if total(probe) <= budget:
                low = probe
            else:
                high = probe
        while high - low > 1:
            slope = (total(high) - total(low)) / (high - low)
            guess = low + int((budget - total(low)) / slope) if slope > 0 else (low + high) // 2
            guess = min(max(guess, low + 1), high - 1)
            if total(guess) <= budget:
                low = guess
            else:
                high = guess
        return {"remat": remat, "T": low, "total": total(low), "next": total(high)}


def measure_memory(args) -> dict:
    """Parts 2 to 4: the sweep, the largest T within the budget and the check."""
    sweep = MemorySweep(args)
    for steps in args.memory_T:
        for remat in args.remat:
            sweep(remat, steps)
    table = dict(sweep.steps)
    naive_t, remat_t = args.check
    naive = sweep("none", naive_t, scan_lif=True)
    plain = sweep("none", naive_t)
    candidates = {remat: sweep(remat, remat_t) for remat in args.remat}
    best = min(candidates, key=lambda remat: candidates[remat].temp_mib)
    largest = [sweep.largest_t(remat) for remat in args.remat]
    return {
        "table": table,
        "largest": largest,
        "check": {
            "naive_T": naive_t,
            "remat_T": remat_t,
            "naive": naive.temp_mib,
            "plain": plain.temp_mib,
            "best": best,
            "remat": candidates[best].temp_mib,
        },
        "compiles": len(sweep.steps) + len(sweep.naive_scan),
    }


# ----------------------------------------------------------------------------------------------
# Reporting


def _find(rows: list[dict], steps: int, remat: str, dtype: str) -> dict | None:
    return next(
        (r for r in rows if (r["T"], r["remat"], r["dtype"]) == (steps, remat, dtype)), None
    )


def _ratio(step: Step, other: dict | None, kind: str) -> str:
    return "-" if other is None else fmt(step.seconds / other[kind].seconds)


def time_markdown(rows: list[dict], args) -> list[str]:
    lines = [
        f"### Step time: spiking `{args.model}` at batch {args.batch} vs its ANN twin at "
        f"batch {args.batch}*T",
        "",
        f"Medians of {args.repeats} rounds timing one call of every step of a T, after one "
        "untimed call each (compile apart); "
        f"{args.image_size}x{args.image_size}x{args.channels} inputs. SNN / ANN: the spiking "
        "step over the twin's step on the same images. vs no remat, vs float32: the same "
        "model's step over its step without remat / in float32 at the same T.",
        "",
        "| T | remat | dtype | SNN step (s) | ANN step (s) | SNN / ANN | SNN vs no remat | "
        "ANN vs no remat | SNN vs float32 | ANN vs float32 | compile SNN / ANN (s) | "
        "XLA temporaries SNN / ANN (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        snn, ann = row["snn"], row["ann"]
        plain = _find(rows, row["T"], "none", row["dtype"])
        f32 = _find(rows, row["T"], row["remat"], "float32")
        cells = [
            str(row["T"]),
            row["remat"],
            row["dtype"],
            fmt(snn.seconds, 4),
            fmt(ann.seconds, 4),
            fmt(snn.seconds / ann.seconds),
            _ratio(snn, plain, "snn"),
            _ratio(ann, plain, "ann"),
            _ratio(snn, f32, "snn"),
            _ratio(ann, f32, "ann"),
            f"{fmt(snn.compile_s, 1)} / {fmt(ann.compile_s, 1)}",
            f"{fmt(snn.temp_mib, 1)} / {fmt(ann.temp_mib, 1)}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def memory_markdown(memory: dict, times: list[dict], args) -> list[str]:
    remats = list(args.remat)
    steps = sorted({s for (_, s) in memory["table"]})
    lines = [
        f"### Memory of the spiking step against T (batch {args.memory_batch}, float32, "
        "compiled only)",
        "",
        "XLA temporaries (MiB) of the compiled step; in brackets the step's total: "
        "temporaries + arguments + outputs - donated (aliased) outputs.",
        "",
        "| T | " + " | ".join(f"remat {r}" for r in remats) + " |",
        "|---|" + "---|" * len(remats),
    ]
    for s in steps:
        cells = []
        for r in remats:
            step = memory["table"].get((r, s))
            cells.append(
                "-" if step is None else f"{fmt(step.temp_mib, 1)} ({fmt(step.total_mib, 1)})"
            )
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Largest T whose step total fits in {args.budget_gib:g} GiB "
        f"({fmt(args.budget_gib * 1024, 0)} MiB) at batch "
        f"{args.memory_batch} (searched by compiling, up to {args.max_T}; "
        f"{memory['compiles']} compiles in parts 2-4):",
        "",
        "| remat | largest T | its total (MiB) | total at T + 1 (MiB) |",
        "|---|---|---|---|",
    ]
    for item in memory["largest"]:
        lines.append(
            f"| {item['remat']} | {item['T']} | {fmt(item['total'], 1)} | {fmt(item['next'], 1)} |"
        )
    check = memory["check"]
    verdict = "pass" if check["remat"] <= check["naive"] else "miss"
    against_plain = "no more" if check["remat"] <= check["plain"] else "more"
    first = args.T[0]
    cost = [
        f"{r}: {fmt(row['snn'].seconds / plain['snn'].seconds)}"
        for r in remats
        if r != "none"
        and (row := _find(times, first, r, "float32")) is not None
        and (plain := _find(times, first, "none", "float32")) is not None
    ]
    lines += [
        "",
        f"Check, T = {check['remat_T']} with the best remat ({check['best']}) against "
        f"T = {check['naive_T']} with the naive scan (`ScanLIF`: lax.scan under autodiff, "
        f"no remat): {fmt(check['remat'], 1)} MiB vs {fmt(check['naive'], 1)} MiB of XLA "
        f"temporaries, ratio {fmt(check['remat'] / check['naive'])}: **{verdict}**. "
        f"Against jsnn's own step at T = {check['naive_T']} without remat "
        f"({fmt(check['plain'], 1)} MiB): ratio {fmt(check['remat'] / check['plain'])}, "
        f"{against_plain} memory. Time cost of remat "
        f"(spiking step over the step without remat, T = {first}, batch {args.batch}, "
        f"float32): {', '.join(cost) if cost else '-'}.",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> dict:
    command = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(command)
    run = start_jax_run()
    times = measure_times(args)
    memory = measure_memory(args)
    wall = elapsed()
    text = publish(
        "train_step",
        command,
        [*time_markdown(times, args), "", *memory_markdown(memory, times, args)],
        results=args.results,
        run=run,
    )
    return {"times": times, "memory": memory, "markdown": text, "wall_seconds": wall}


if __name__ == "__main__":
    main()
