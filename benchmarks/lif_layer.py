"""The LIF-layer benchmark of the Open Neuromorphic comparison, done right, side by side.

    python -m benchmarks.lif_layer [--sizes 1024,2048] [--steps 100] [--batch 16]
        [--repeats 10] [--rounds 3] [--peers spyx,spikingjelly,snntorch,norse | none]
        [--install-peers] [--peers-venv PATH] [--results benchmarks/RESULTS.md]

The network (Open Neuromorphic's, `peers.md`-style protocol): one ``Linear(n -> n)`` (with bias)
feeding one layer of n LIF neurons (decay 0.8, threshold 1, hard reset, arctan surrogate of peak
1), batch 16, T steps of float32 standard-normal input; timed: forward and backward of the
summed spikes with respect to the Linear's parameters. Unlike the published harness, every
framework is compiled or jitted where it can be, warmed up, synchronised after every call
(``block_until_ready``, ``torch.cuda.synchronize``) and timed as the median of ``--repeats``
runs per round; ``--rounds`` repeats the whole set of frameworks in turn (rotated order) and
pools the runs, so that load from other jobs falls on all of them alike. Each framework and
variant runs in a fresh process: peak memory is that process's (device peak on an accelerator,
maximum resident set on a CPU, which includes the framework's own runtime); JAX programs also
report XLA's temporary buffers, the memory the computation itself needs.

Compared, in one run:

* **jsnn**: ``nnx.Linear`` through :class:`jsnn.TimeDistributed` (the ``B*T`` folded batch, one
  matmul) and :class:`jsnn.LIF`, jitted; the neuron is :func:`jsnn.neuron.lif`, one
  ``custom_vjp`` whose only residual is the membrane.
* **floor**: the same ``Linear`` followed by a ReLU, no time recurrence: what any SNN layer of
  this shape costs at least. ``x floor`` below is a framework's time over the floor's.
* **the peers** (:mod:`benchmarks.peers`): spyx, SpikingJelly (every backend the device has),
  snnTorch, Norse (eager and ``torch.compile``), run from their own virtual environment, which
  ``--install-peers`` creates (never in CI). A peer that is not installed or fails is listed as
  skipped, with the reason.

Defaults follow the device: on a CPU n in {1024, 2048} and T = 100; on an accelerator n in
{4096, 8192, 16384} and T = 500. The targets checked at the largest size: on a CPU jsnn within
1.15x of the floor and at least 1.7x faster than the fastest peer; on a GPU within 1.25x of the
floor, at least 1.5x faster than spyx and 2x faster than SpikingJelly's best backend.

Appends a section (date, device, versions, commit, command, table) to ``--results``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks import peers
from benchmarks.common import (
    RESULTS,
    log,
    peak_memory_mib,
    positive_ints,
    publish,
    run_json_worker,
    start_jax_run,
    subset_of,
    temp_mib,
    timed_runs,
)

OURS = ("jsnn", "floor")
DECAY, V_TH = 0.8, 1.0
# (largest n, x floor at most, peer -> jsnn at least this many times faster)
TARGETS = {
    "cpu": (2048, 1.15, {"fastest peer": 1.7}),
    "gpu": (16384, 1.25, {"spyx": 1.5, "spikingjelly": 2.0}),
}


def _peer_names(text: str) -> tuple[str, ...]:
    if text.strip().lower() == "none":
        return ()
    return subset_of(peers.PEERS)(text.lower())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.lif_layer",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        type=positive_ints,
        help="layer widths n (default: 1024,2048 on CPU, 4096,8192,16384)",
    )
    parser.add_argument("--steps", type=int, help="time steps T (default: 100 on CPU, else 500)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (compiles)")
    parser.add_argument("--rounds", type=int, default=3, help="passes over all frameworks")
    parser.add_argument(
        "--peers", type=_peer_names, default=peers.PEERS, help="peers to compare, or 'none'"
    )
    parser.add_argument("--peers-venv", type=Path, default=peers.DEFAULT_VENV)
    parser.add_argument(
        "--install-peers", action="store_true", help="create the peers' venv and install them"
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per worker")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="markdown file the section is appended to"
    )
    parser.add_argument("--worker", choices=OURS, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("steps", "batch", "repeats", "rounds", "timeout"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name} must be > 0, got {value}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


# ----------------------------------------------------------------------------------------------
# Workers: one framework, one size, in this process


def measure_ours(name: str, *, n: int, steps: int, batch: int, repeats: int, warmup: int) -> dict:
    """Times jsnn's LIF layer or the floor in this process; the dict of :mod:`benchmarks.peers`."""
    import flax
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import jsnn
    from jsnn.surrogate import ArcTan

    rngs = nnx.Rngs(0)
    linear = jsnn.TimeDistributed(nnx.Linear(n, n, rngs=rngs))
    if name == "jsnn":
        # ArcTan(1): 1 / (1 + (pi x)^2), SpikingJelly's ATan(alpha=2).
        neuron = jsnn.LIF(decay=DECAY, v_th=V_TH, surrogate=ArcTan(1.0), reset="hard")
        variant, notes = "jit, custom_vjp LIF", "LIF decay 0.8, v_th 1, hard reset, arctan"
    else:
        neuron = nnx.relu
        variant, notes = "jit, Linear + ReLU", "no time recurrence: the lower bound"
    model = nnx.Sequential(linear, neuron)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(1), (batch, steps, n), jnp.float32)

    def loss(params, x):
        return jnp.sum(nnx.merge(graphdef, params, rest)(x))

    outputs = jax.jit(nnx.merge(graphdef, params, rest))(x)
    gradient = jax.jit(jax.grad(loss))
    compiled = gradient.lower(params, x).compile()
    times = timed_runs(lambda: compiled(params, x), jax.block_until_ready, repeats, warmup=warmup)
    grads = compiled(params, x)
    grad_norm = float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads))))
    if not (np.isfinite(grad_norm) and grad_norm > 0):
        raise RuntimeError(f"{name}: the gradient is zero or not finite ({grad_norm})")
    peak, kind = peak_memory_mib()
    device = jax.devices()[0]
    return {
        "framework": name,
        "variant": variant,
        "version": f"jax {jax.__version__}, flax {flax.__version__}",
        "device": device.device_kind,
        "median_s": statistics.median(times),
        "times_s": times,
        "peak_mib": peak,
        "memory_kind": kind,
        "temp_mib": temp_mib(compiled),
        "spike_rate": float(jnp.mean(outputs > 0)),
        "grad_norm": grad_norm,
        "notes": notes,
        "skipped": None,
    }


def _run_ours(name: str, args: argparse.Namespace, n: int) -> dict:
    """:func:`measure_ours` in a fresh process of this interpreter (its own peak memory)."""
    command = [sys.executable, "-m", "benchmarks.lif_layer", "--worker", name, "--n", str(n)]
    for option in ("steps", "batch", "repeats", "warmup"):
        command += [f"--{option}", str(getattr(args, option))]
    result, reason = run_json_worker(command, args.timeout)
    return {"framework": name, "variant": "-", "skipped": reason} if reason else result


# ----------------------------------------------------------------------------------------------
# The comparison


def _pool(results: list[dict]) -> dict:
    """One framework variant's rounds as one result: all timed runs pooled, worst peak memory."""
    ran = [result for result in results if not result.get("skipped")]
    if not ran:
        return results[-1]
    times = [t for result in ran for t in result["times_s"]]
    return {
        **ran[-1],
        "times_s": times,
        "median_s": statistics.median(times),
        "peak_mib": max(result["peak_mib"] for result in ran),
        "rounds": len(ran),
    }


def compare(args: argparse.Namespace, n: int, python: Path | None) -> list[dict]:
    """Every framework at width n, ``args.rounds`` times in rotated order, pooled per variant."""
    runners = [("ours", name) for name in OURS]
    if python is not None:
        runners += [("peer", name) for name in (*args.peers, peers.TORCH_FLOOR)]
    by_variant: dict[tuple[str, str], list[dict]] = {}
    for round_index in range(args.rounds):
        shift = round_index % len(runners)
        for kind, name in runners[shift:] + runners[:shift]:
            log(f"n = {n}, round {round_index + 1}/{args.rounds}: {name}")
            if kind == "ours":
                results = [_run_ours(name, args, n)]
            else:
                results = peers.measure(
                    python,
                    name,
                    n=n,
                    steps=args.steps,
                    batch=args.batch,
                    repeats=args.repeats,
                    warmup=args.warmup,
                    timeout=args.timeout,
                )
            for result in results:
                key = (result["framework"], result.get("variant") or "-")
                by_variant.setdefault(key, []).append(result)
                if result.get("skipped"):
                    log(f"  {key[0]} ({key[1]}): skipped: {result['skipped']}")
                else:
                    log(f"  {key[0]} ({key[1]}): median {result['median_s'] * 1e3:.1f} ms")
    return [_pool(results) for results in by_variant.values()]


def _fastest(rows: list[dict], framework: str | None = None) -> dict | None:
    ran = [
        row
        for row in rows
        if not row.get("skipped")
        and row["framework"] not in (*OURS, peers.TORCH_FLOOR)
        and framework in (None, row["framework"])
    ]
    return min(ran, key=lambda row: row["median_s"], default=None)


def _get(rows: list[dict], framework: str) -> dict | None:
    return next((row for row in rows if row["framework"] == framework), None)


def check_targets(platform: str, n: int, rows: list[dict]) -> list[str]:
    """The issue's targets at this size, each as a line saying met, missed or not measurable."""
    size, floor_limit, speedups = TARGETS["cpu" if platform == "cpu" else "gpu"]
    if n != size:
        return []
    ours, floor = _get(rows, "jsnn"), _get(rows, "floor")
    if ours is None or floor is None or ours.get("skipped") or floor.get("skipped"):
        return ["- targets: not checked, jsnn or the floor did not run"]
    ratio = ours["median_s"] / floor["median_s"]
    verdict = "met" if ratio <= floor_limit else "missed"
    lines = [f"- target jsnn <= {floor_limit}x the floor at n = {n}: {ratio:.3f}x, {verdict}"]
    for peer, limit in speedups.items():
        best = _fastest(rows, None if peer == "fastest peer" else peer)
        if best is None:
            lines.append(f"- target >= {limit}x faster than {peer}: not measured (not run)")
            continue
        speedup = best["median_s"] / ours["median_s"]
        verdict = "met" if speedup >= limit else "missed"
        lines.append(
            f"- target >= {limit}x faster than {peer} ({best['framework']}, {best['variant']}): "
            f"{speedup:.2f}x, {verdict}"
        )
    return lines


def over_own_floor(row: dict, rows: list[dict]) -> float | None:
    """Seconds above the floor of the row's own framework (JAX's for jsnn and spyx, PyTorch's
    for the torch peers): the cost of the neuron layer itself, whatever the matmul costs."""
    floor = _get(rows, "floor" if row["framework"] in ("jsnn", "spyx") else peers.TORCH_FLOOR)
    if floor is None or floor.get("skipped") or row["framework"] in ("floor", peers.TORCH_FLOOR):
        return None
    return row["median_s"] - floor["median_s"]


def neuron_cost(rows: list[dict]) -> list[str]:
    """jsnn's neuron layer against the peers' cheapest, both over their own framework's floor."""
    ours = _get(rows, "jsnn")
    costs = [
        (over_own_floor(row, rows), row)
        for row in rows
        if not row.get("skipped") and row["framework"] not in (*OURS, peers.TORCH_FLOOR)
    ]
    costs = [(seconds, row) for seconds, row in costs if seconds is not None]
    if ours is None or ours.get("skipped") or not costs:
        return []
    mine = over_own_floor(ours, rows)
    seconds, row = min(costs, key=lambda item: item[0])
    return [
        f"- the neuron layer over its own framework's floor: jsnn {mine * 1e3:.1f} ms, the "
        f"cheapest peer {seconds * 1e3:.1f} ms ({row['framework']}, {row['variant']})"
    ]


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def markdown(args: argparse.Namespace, platform: str, results: dict[int, list[dict]]) -> list[str]:
    lines = [
        f"### LIF layer: Linear(n -> n) + LIF, batch {args.batch}, T = {args.steps}, float32, "
        "forward + backward",
        "",
        f"Median of {args.repeats} timed runs per round after {args.warmup} warm-up runs, pooled "
        f'over {args.rounds} round(s) in rotated order; every call synchronised. "x floor": '
        "time / the floor's (Linear + ReLU, no recurrence); \"jsnn faster\": this time / jsnn's; "
        '"over own floor": this time minus the floor of its own framework (JAX\'s `floor` for '
        "jsnn and spyx, `torch_floor` for the torch peers), the cost of the neuron layer itself. "
        "Peak memory: the worker process's (max RSS on a CPU, so including the framework's "
        "runtime; device peak on an accelerator); XLA temp: the JAX program's own buffers.",
    ]
    for n, rows in results.items():
        ours, floor = _get(rows, "jsnn"), _get(rows, "floor")
        lines += [
            "",
            f"**n = {n}**",
            "",
            "| framework | variant | version | median (ms) | x floor | jsnn faster | "
            "over own floor (ms) | peak memory (MiB) | XLA temp (MiB) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in sorted(rows, key=lambda row: row.get("median_s") or float("inf")):
            if row.get("skipped"):
                lines.append(
                    f"| {row['framework']} | {row.get('variant') or '-'} | - | "
                    f"skipped: {row['skipped']} | - | - | - | - | - |"
                )
                continue
            x_floor = x_ours = over = "-"
            if (seconds := over_own_floor(row, rows)) is not None:
                over = f"{seconds * 1e3:.1f}"
            if floor and not floor.get("skipped"):
                x_floor = f"{row['median_s'] / floor['median_s']:.3f}"
            if ours and not ours.get("skipped"):
                x_ours = f"{row['median_s'] / ours['median_s']:.2f}"
            lines.append(
                f"| {row['framework']} | {row['variant']} | {row.get('version') or '-'} | "
                f"{row['median_s'] * 1e3:.1f} | {x_floor} | {x_ours} | {over} | "
                f"{_mib(row['peak_mib'])} | "
                f"{_mib(row.get('temp_mib'))} |"
            )
        lines += ["", *check_targets(platform, n, rows), *neuron_cost(rows)]
    notes = {
        row["framework"]: row["notes"]
        for rows in results.values()
        for row in rows
        if not row.get("skipped") and row.get("notes")
    }
    lines += ["", "How each framework ran:", ""]
    lines += [f"- {framework}: {note}" for framework, note in notes.items()]
    return lines


def main(argv: Sequence[str] | None = None) -> dict:
    command = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(command)
    if args.worker:
        result = measure_ours(
            args.worker,
            n=args.n,
            steps=args.steps,
            batch=args.batch,
            repeats=args.repeats,
            warmup=args.warmup,
        )
        print(json.dumps(result), flush=True)
        return result

    import jax

    run = start_jax_run()
    platform = jax.devices()[0].platform
    on_cpu = platform == "cpu"
    args.sizes = args.sizes or ((1024, 2048) if on_cpu else (4096, 8192, 16384))
    args.steps = args.steps or (100 if on_cpu else 500)
    log(f"sizes {args.sizes}, T = {args.steps}")
    python = None
    if args.peers:
        if args.install_peers:
            peers.install(args.peers_venv, args.peers)
        python = peers.venv_python(args.peers_venv)
        if not python.exists():
            log(f"no peers' venv at {args.peers_venv} (--install-peers creates it): peers skipped")
            python = None
    results = {n: compare(args, n, python) for n in args.sizes}
    body = markdown(args, platform, results)
    if python is None and args.peers:
        body += ["", f"Peers not run: no virtual environment at `{args.peers_venv}`."]
    text = publish(
        "lif_layer",
        command,
        body,
        results=args.results,
        run=run,
    )
    return {"results": results, "markdown": text}


if __name__ == "__main__":
    main()
