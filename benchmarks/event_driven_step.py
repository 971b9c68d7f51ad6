"""One training step with event-driven (spike-time) gradients against surrogate-gradient BPTT on
the same network, in time and memory, as T grows.

    python -m benchmarks.event_driven_step [--T 16,64,256] [--batch 16] [--repeats 5]
        [--architecture 16C3p1-P2-32C3p1-P2-128] [--image-size 8] [--results benchmarks/RESULTS.md]

The network is :class:`jsnn.methods.event_driven.EventDrivenNet` of ``--architecture`` (the
method's default: the digits net) on random ``--image-size`` square one-channel images, 10
classes, the method's neurons (MNIST time constants), the count loss, AdamW; the step is the
trainer's (:func:`jsnn.train.make_train_step`, state donated).

- **event-driven**: the method's step; each layer's backward pass is the spike-time
  ``custom_vjp`` of :func:`jsnn.methods.event_driven.srm_layer`, adjusted average pooling.
- **BPTT**: the same network, weights and forward dynamics (the SRM traces and their reset),
  differentiated by autodiff through time with a triangular surrogate of the spike (width 1
  around the threshold), plain average pooling, the same loss without the supervisory spike.

For each T: both steps compiled ahead of time (compile time and XLA's temporary buffers,
``memory_analysis``), then timed in ``--repeats`` rounds of one call each, alternating, every
call waited for. The table gives medians and the ratio BPTT / event-driven of each.
"""

from __future__ import annotations

import argparse
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
    compile_timed,
    fmt,
    log,
    positive_ints,
    publish,
    start_jax_run,
    temp_mib,
)
from jsnn import surrogate, train
from jsnn.methods import event_driven as ed
from jsnn.train import TrainConfig

METHOD = ed.EventDriven()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.event_driven_step",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--T", type=positive_ints, default=(16, 64, 256), help="time steps")
    parser.add_argument("--batch", type=int, default=16, help="images per step")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds")
    parser.add_argument("--architecture", default=METHOD.architecture, help="the network")
    parser.add_argument("--image-size", type=int, default=8, help="input height and width")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and weights")
    parser.add_argument("--results", type=Path, default=RESULTS, help="file to append to")
    args = parser.parse_args(argv)
    for name in ("batch", "repeats", "image_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def _bptt_layer(x, w, synapse, neurons: dict) -> jax.Array:
    """The SRM layer of :func:`ed.srm_forward` written for autodiff: the same traces and
    reset, the spike a triangular surrogate's."""
    batch, steps = x.shape[:2]
    folded = synapse(x.reshape(batch * steps, *x.shape[2:]), w)
    currents = folded.reshape(batch, steps, *folded.shape[1:])
    a_m, a_s = (1 - 1 / neurons[name] for name in ("tau_m", "tau_s"))
    scale = neurons["tau_m"] / (neurons["tau_m"] - neurons["tau_s"])
    spike_fn = surrogate.Triangular(1.0)

    def step(carry, current):
        m, s = carry
        m, s = (m + current) * a_m, (s + current) * a_s
        spike = spike_fn((m - s) * scale - neurons["v_th"])
        keep = 1 - spike
        return (m * keep, s * keep), spike

    zeros = jnp.zeros((currents.shape[0], *currents.shape[2:]), currents.dtype)
    _, spikes = jax.lax.scan(step, (zeros, zeros), jnp.moveaxis(currents, 1, 0))
    return jnp.moveaxis(spikes, 0, 1)


class BPTTNet(nnx.Module):
    """An :class:`ed.EventDrivenNet` run with surrogate-gradient BPTT (its own weights)."""

    def __init__(self, net: ed.EventDrivenNet):
        self.net = net

    def __call__(self, x: jax.Array) -> jax.Array:
        net = self.net
        x = net.encode(x)
        for kind, size, layer in net.stages():
            if kind == "pool":
                *lead, height, width, channels = x.shape
                blocks = x.reshape(*lead, height // size, size, width // size, size, channels)
                x = jnp.mean(blocks, axis=(-4, -2))
                continue
            if kind == "dense" and x.ndim > 3:
                x = x.reshape(*x.shape[:2], -1)
            x = _bptt_layer(x, layer.weight().astype(x.dtype), layer.synapse, net.neurons)
        return x


def measure(args: argparse.Namespace, steps: int) -> dict:
    rng = np.random.default_rng(args.seed)
    images = rng.uniform(size=(args.batch, args.image_size, args.image_size, 1))
    batch = {
        "image": jnp.asarray(images, jnp.float32),
        "label": jnp.asarray(rng.integers(0, 10, size=args.batch), jnp.int32),
    }
    net = ed.EventDrivenNet(
        args.architecture,
        input_shape=(args.image_size, args.image_size, 1),
        num_classes=10,
        steps=steps,
        neurons=METHOD.neuron_options(),
        rngs=nnx.Rngs(args.seed),
    )
    ed.initialize_scales(net, batch["image"], avg_spike_init=METHOD.avg_spike_init)
    config = TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=5e-4, grad_clip=1.0)
    tx = train.optimizer(config, steps_per_epoch=100)
    loss = METHOD.loss(None)
    result = {}
    runs = {}
    for name, model in (("event-driven", net), ("BPTT", BPTTNet(net))):
        step = train.make_train_step(tx, loss, platform=jax.default_backend())
        # Own buffers for each: the steps donate their states, which share the weights.
        state = jax.tree.map(jnp.array, train.TrainState.create(model, tx))
        compiled, compile_s = compile_timed(step, state, batch)
        result[name] = {"compile": compile_s, "temp": temp_mib(compiled), "times": []}
        state, _ = compiled(state, batch)  # the untimed first call
        runs[name] = [compiled, state]
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run[1], metrics = run[0](run[1], batch)
            jax.block_until_ready(metrics)
            result[name]["times"].append(time.perf_counter() - start)
    for values in result.values():
        values["median"] = statistics.median(values.pop("times"))
    log(
        f"T={steps}: event-driven {fmt(result['event-driven']['median'], 4)} s, BPTT "
        f"{fmt(result['BPTT']['median'], 4)} s"
    )
    return result


def markdown(rows: dict[int, dict], args: argparse.Namespace) -> list[str]:
    lines = [
        f"One training step, event-driven gradients against surrogate BPTT on the same network "
        f"(`{args.architecture}`, {args.image_size}x{args.image_size} inputs, batch "
        f"{args.batch}; medians of {args.repeats}; XLA's temporary buffers).",
        "",
        "| T | event-driven step (s) | BPTT step (s) | time BPTT / ED | event-driven temp "
        "(MiB) | BPTT temp (MiB) | memory BPTT / ED | compile ED / BPTT (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for steps, r in rows.items():
        ed_r, bp = r["event-driven"], r["BPTT"]
        memory = bp["temp"] / ed_r["temp"] if ed_r["temp"] and bp["temp"] else None
        cells = [
            str(steps),
            fmt(ed_r["median"], 4),
            fmt(bp["median"], 4),
            fmt(bp["median"] / ed_r["median"]),
            fmt(ed_r["temp"], 1),
            fmt(bp["temp"], 1),
            fmt(memory),
            f"{fmt(ed_r['compile'], 1)} / {fmt(bp['compile'], 1)}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> dict:
    command = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(command)
    started = start_jax_run()
    rows = {steps: measure(args, steps) for steps in args.T}
    text = publish(
        "event_driven_step", command, markdown(rows, args), results=args.results, run=started
    )
    return {"rows": rows, "markdown": text}


if __name__ == "__main__":
    main()
