"""How often the random-direction estimator picks the temperature Dspike's exact search picks.

    python -m benchmarks.fdg_agreement [--epochs 6] [--batches 2] [--directions 8,32,64,128]
        [--keys 2] [--b-grid 1,2,...,8] [--results benchmarks/RESULTS.md]

The quickstart's ``digits_net`` (first layer 3*3*1*32 = 288 weights) trained on the bundled
digits by :func:`jsnn.train.fit` with method ``dspike``: the method's own hook
(:func:`jsnn.methods.dspike.temperature_search`, the exact FDG) sets the temperature before
every epoch. Just before it, a probe hook takes the epoch-start model and the epoch's first
batches and computes, with the library's parts (:mod:`jsnn.methods.fdg`), the exact FDG and the
FDG sketched on k random directions for each k with several random keys; each is turned into
the search's decision (:func:`jsnn.methods.fdg.choose`: the candidate among b, b + 0.2, b - 0.2
whose surrogate gradient is most similar) at the run's own b and at every b of ``--b-grid``
(the FDG does not depend on b, so extra temperatures cost only gradients; on the digits the
decision is trivial, always b + 0.2, until b nears the cosine's maximum). Reported: the share
of random decisions equal to the exact one (with baselines that do not search), the cosine with
the exact FDG lost when they differ, and the cost of each search relative to the exact one.

Appends a section (date, device, versions, commit, command, tables) to ``--results`` and prints
the tables. Seeds are fixed (``--seed``). :mod:`benchmarks.fdg_cost` measures what a search
costs on the CIFAR-10 ResNet-18.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common import (
    RESULTS,
    compile_timed,
    elapsed,
    fmt,
    log,
    positive_floats,
    positive_ints,
    publish,
    start_jax_run,
)
from jsnn import data, losses, recipes, run, train
from jsnn.config import Config
from jsnn.methods import dspike, fdg

QUICKSTART = recipes.DIGITS["digits"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fdg_agreement",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--epochs", type=int, default=6, help="epochs of digits_net training")
    add("--batches", type=int, default=2, help="batches searched at each epoch start")
    add(
        "--directions",
        type=positive_ints,
        default=(8, 32, 64, 128),
        help="k of the random-direction estimator",
    )
    add("--keys", type=int, default=2, help="random keys per k and batch")
    add(
        "--b-grid",
        type=positive_floats,
        default=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0),
        help="temperatures each point is also decided at (besides the run's own b): the FDG "
        "does not depend on b, so each costs only 3 more gradients; on the digits the cosine "
        "rises with b up to about 5-8, where the decisions get close",
    )
    add("--T", type=int, default=QUICKSTART.model.time_steps, help="time steps of digits_net")
    add(
        "--batch-size",
        type=int,
        default=QUICKSTART.train.batch_size,
        help="training (and search) batch",
    )
    add("--seed", type=int, default=0, help="model, data and direction seed")
    add("--results", type=Path, default=RESULTS, help="markdown file the section is appended to")
    args = parser.parse_args(argv)
    for name in ("epochs", "batches", "keys", "T", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def config_for(args: argparse.Namespace, workdir: str = "runs/fdg_agreement") -> Config:
    """The quickstart with method ``dspike`` at the benchmarked T, batch and epochs."""
    return QUICKSTART.override(
        {
            "method.name": "dspike",
            "model.time_steps": args.T,
            "train.epochs": args.epochs,
            "train.batch_size": args.batch_size,
            "train.seed": args.seed,
            "train.workdir": workdir,
            "train.progress": False,
            "train.tensorboard": False,
        }
    )


# ----------------------------------------------------------------------------------------------
# Measuring


class Parts:
    """The search's parts on a model's state (``nnx.state(model)``) and a batch: the hook's
    loss (:func:`jsnn.methods.dspike.searched_loss`) and :mod:`jsnn.methods.fdg`, jitted apart
    so that one FDG serves the decisions at many temperatures."""

    def __init__(self, config: Config, model: nnx.Module):
        self.method = config.method
        self.loss = self.method.loss(config) or losses.get(config.train.loss)
        self.graphdef = nnx.graphdef(model)
        self.prefix = dspike.searched_path(model, self.method.layer)
        selected, _ = dspike.select_params(nnx.state(model, nnx.Param), self.prefix)
        self.size = sum(leaf.size for leaf in selected)
        method = self.method
        options = {"eps": method.eps, "chunk_size": method.chunk}

        def searched(state, batch):
            model = nnx.merge(self.graphdef, state, copy=True)
            loss, weights = dspike.searched_loss(model, batch, self.prefix, self.loss)
            return loss, weights, dspike.temperature(model)

        def reference(state, batch):
            """The exact FDG of the searched weights (Eq. 10)."""
            loss, w, b = searched(state, batch)
            return fdg.finite_difference_gradient(lambda v: loss(v, b), w, **options)

        def sketch(state, batch, directions):
            """The FDG sketched on ``directions`` ``[k, size]``."""
            loss, w, b = searched(state, batch)
            return fdg.directional_differences(lambda v: loss(v, b), w, directions, **options)

        def gradients(state, batch, temperatures):
            """For each b of ``temperatures`` ``[n]``: the candidates ``[n, 3]`` and their
            surrogate gradients, in one vmap."""
            loss, w, _ = searched(state, batch)
            candidates = fdg.candidates(temperatures, method.b_step)
            return candidates, fdg.candidate_gradients(loss, w, candidates)

        self.reference = jax.jit(reference)
        self.sketch = jax.jit(sketch)
        self.gradients = jax.jit(gradients)
        self.choose = jax.jit(fdg.choose)

    def directions(self, key: jax.Array, count: int) -> jax.Array:
        return fdg.random_directions(key, self.size, count)


class Probe:
    """An epoch-start hook recording, at the epoch-start model, the exact and the random
    decisions on the epoch's first ``--batches`` batches (it changes nothing)."""

    def __init__(self, args, config: Config, model: nnx.Module, dataset: data.Dataset):
        self.args, self.parts = args, Parts(config, model)
        self.steps = dataset.steps_per_epoch(config.train.batch_size)
        self.data = dataset.train(batch_size=config.train.batch_size, seed=config.train.seed)
        self.ks = [k for k in args.directions if k <= self.parts.size]
        self.times: dict = {"exact": [], "gradients": [], **{k: [] for k in self.ks}}
        self.decisions: list[dict] = []  # one per (point, b), with the picks of every key
        self.exact_b: list[float] = []  # the exact pick at the run's b, epoch by epoch
        self.points = 0
        self.compiled: dict = {}
        self.compile_exact = None

    def _compile(self, state, batch, temperatures) -> None:
        """The timed parts compiled ahead of time (the timings leave compiling out)."""
        parts = self.parts
        log(f"compiling the exact FDG, the gradients and the sketches for k in {self.ks}")
        compiled = self.compiled
        compiled["reference"], self.compile_exact = compile_timed(parts.reference, state, batch)
        compiled["gradients"], _ = compile_timed(parts.gradients, state, batch, temperatures[:1])
        compiled["grid"], _ = compile_timed(parts.gradients, state, batch, temperatures)
        for k in self.ks:
            directions = parts.directions(jax.random.key(0), k)
            compiled[k], _ = compile_timed(parts.sketch, state, batch, directions)

    def __call__(self, model: nnx.Module, epoch: int, first: dict) -> None:
        args, parts, ks, compiled = self.args, self.parts, self.ks, self.compiled
        state = nnx.state(model)
        run_b = float(dspike.temperature(model))
        temperatures = jnp.asarray([run_b, *args.b_grid])
        if not compiled:
            self._compile(state, first, temperatures)
        mesh = first["image"].sharding.mesh
        for j in range(min(args.batches, self.steps)):
            batch = first if j == 0 else train.shard_batch(self.data[epoch * self.steps + j], mesh)
            _, seconds = _timed(compiled["gradients"], state, batch, temperatures[:1])
            self.times["gradients"].append(seconds)
            reference, seconds = _timed(compiled["reference"], state, batch)
            self.times["exact"].append(seconds)
            candidates, grads = compiled["grid"](state, batch, temperatures)
            exact = np.asarray(parts.choose(candidates, grads, reference)["cosines"])
            best = exact.argmax(axis=1)
            if j == 0:  # what the hook is about to set for the epoch
                self.exact_b.append(float(candidates[0, best[0]]))
            picks: dict = {}
            for k in ks:
                for rep in range(args.keys):
                    key = jax.random.fold_in(jax.random.key(args.seed), epoch)
                    key = jax.random.fold_in(jax.random.fold_in(key, j), rep)
                    start = time.perf_counter()  # the hook draws its directions each time too
                    directions = parts.directions(jax.random.fold_in(key, k), k)
                    sketched = jax.block_until_ready(compiled[k](state, batch, directions))
                    self.times[k].append(time.perf_counter() - start)
                    found = parts.choose(candidates, grads, sketched, directions)["cosines"]
                    picks.setdefault(k, []).append(np.asarray(found).argmax(axis=1))
            for row, b in enumerate(np.asarray(temperatures)):
                valid = exact[row][np.isfinite(exact[row])]
                ranked = np.sort(valid)[::-1]
                self.decisions.append(
                    {
                        "point": self.points,
                        "own_b": row == 0,
                        "b": float(b),
                        "cosines": exact[row],
                        "best": int(best[row]),
                        "margin": float(ranked[0] - ranked[1]),
                        "valid": len(valid),
                        "picks": {k: [int(p[row]) for p in picks[k]] for k in ks},
                    }
                )
            self.points += 1
            same = ", ".join(
                f"k={k}: {sum(int(p[0] == best[0]) for p in picks[k])}/{args.keys}" for k in ks
            )
            grid_same = (
                np.mean([np.mean(p[1:] == best[1:]) for k in ks for p in picks[k]])
                if len(temperatures) > 1 and ks
                else math.nan
            )
            log(
                f"epoch {epoch + 1} batch {j + 1}: at the run's b = {run_b:.2f} the exact search "
                f"picks {float(candidates[0, best[0]]):.2f} (cosines "
                f"{', '.join(fmt(c, 3) for c in exact[0])}); same pick {same}; over the b "
                f"grid {grid_same:.2f} of the random picks agree"
            )


def _timed(fn, *arguments):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*arguments))
    return out, time.perf_counter() - start


def measure_agreement(args: argparse.Namespace) -> dict:
    """Exact and random-direction decisions at several (state, batch) points of a digits_net
    run of method ``dspike``, each point decided at the run's own temperature and at every
    temperature of ``--b-grid``."""
    with tempfile.TemporaryDirectory() as workdir:
        config = config_for(args, workdir)
        dataset = run.build_dataset(config)
        model = run.build_model(config, dataset)
        probe = Probe(args, config, model, dataset)
        log(
            f"{config.model.name} (first layer {probe.parts.size} weights, T = "
            f"{config.model.time_steps}, batch {config.train.batch_size}), {args.epochs} epochs "
            f"of {probe.steps} steps with the temperature search"
        )
        hooks = (probe, *config.method.epoch_start(model, config))
        train.fit(
            config.train,
            model,
            dataset,
            loss=config.method.loss(config),
            epoch_start=hooks,
            devices=jax.devices()[:1],
            record=config.to_dict(),
        )
        records = train.read_metrics(Path(workdir) / "metrics.jsonl")
    hook_b = [r["dspike_b"] for r in records if r["kind"] == "epoch_start"]
    return {
        "decisions": probe.decisions,
        "ks": probe.ks,
        "times": {name: statistics.median(values) for name, values in probe.times.items()},
        "points": probe.points,
        "keys": args.keys,
        "grid": args.b_grid,
        "size": probe.parts.size,
        "config": config,
        "steps_per_epoch": probe.steps,
        "compile_exact": probe.compile_exact,
        "exact_b": probe.exact_b,
        "hook_b": hook_b,
    }


# ----------------------------------------------------------------------------------------------
# Report


def _wilson(successes: int, total: int) -> tuple[float, float]:
    """The 95% Wilson interval of a proportion."""
    if total == 0:
        return math.nan, math.nan
    z, p = 1.96, successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(centre - half, 0.0), min(centre + half, 1.0)


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
        f"### Agreement with the exact search: `{config.model.name}` on the digits",
        "",
        f"First layer {result['size']} weights (exact FDG: {2 * result['size']} passes); T = "
        f"{config.model.time_steps}, batch {config.train.batch_size}, {config.train.epochs} "
        f"epochs of {result['steps_per_epoch']} steps ({config.train.optimizer}, lr "
        f"{config.train.lr:g}), the exact search applied before every epoch as "
        f'`method="dspike"` does. {result["points"]} points: the first '
        f"{result['points'] // config.train.epochs} batch(es) of each epoch at the "
        f"epoch-start state. Each point is decided at the run's own b (what the hook decides) "
        f"and at every b of the grid {', '.join(f'{b:g}' for b in result['grid'])} (the FDG "
        f"and its sketches do not depend on b, so these cost only 3 gradients each; "
        f"decisions at one point share its FDG and sketch, so they are correlated and their "
        f"intervals optimistic). Random directions: {result['keys']} key(s) per k and point. "
        f"Each cell: the share of decisions picking the exact search's candidate (b, b+0.2, "
        f'b-0.2), (hits/total; 95% Wilson interval). "closer half": the grid decisions '
        f"whose exact best and second-best cosines differ by at most the median gap "
        f'({fmt(median_margin, 4)}). "cosine lost": the exact FDG\'s cosine with the exact '
        f"pick minus its cosine with the estimator's pick, mean over all decisions. Times: "
        f"medians of the FDG (or sketch, with drawing its directions) plus the 3 surrogate "
        f"gradients ({fmt(times['gradients'], 3)} s), i.e. one search.",
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
        f"{fmt(exact_seconds, 3)} | 1.000 | (reference) | (reference) | (reference) | 0 |",
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
            f"| random directions, k = {k} | {2 * k} | {fmt(seconds, 3)} | "
            f"{fmt(seconds / exact_seconds, 3)} | {_share(hits(own, k), keys * len(own))} | "
            f"{_share(hits(grid, k), keys * len(grid))} | "
            f"{_share(hits(close, k), keys * len(close))} | {fmt(regret, 4)} |"
        )
    for name, pick in (("keep b", 0), ("always b+0.2", 1)):

        def count(group, pick=pick):
            return sum(d["best"] == pick for d in group)

        lines.append(
            f"| baseline: {name} (no search) | 0 | - | - | {_share(count(own), len(own))} | "
            f"{_share(count(grid), len(grid))} | {_share(count(close), len(close))} | "
            f"{fmt(lost(lambda d, pick=pick: pick), 4)} |"
        )

    def uniform(group):
        return fmt(float(np.mean([1 / d["valid"] for d in group])), 3) if group else "-"

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
        f"{uniform(grid)} | {uniform(close)} | {fmt(uniform_lost, 4)} |"
    )
    return lines


def main(argv: Sequence[str] | None = None) -> dict:
    command = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(command)
    started = start_jax_run()
    agreement = measure_agreement(args)
    wall = elapsed()
    body = agreement_markdown(agreement)
    text = publish("fdg_agreement", command, body, results=args.results, run=started)
    return {"agreement": agreement, "markdown": text, "wall_seconds": wall}


if __name__ == "__main__":
    main()
