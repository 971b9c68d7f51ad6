"""The other SNN frameworks' side of the LIF-layer benchmark: spyx, SpikingJelly, snnTorch and
Norse, installed in a virtual environment of their own and each measured in a fresh subprocess.

    python -m benchmarks.peers --install [--venv PATH] [--peers spyx,norse]
    ~/.cache/jsnn-bench-peers/bin/python -m benchmarks.peers --worker NAME [--variant V]
        [--n N] [--steps T] [--batch B] [--repeats R] [--warmup W]

``--install`` creates the peers' virtual environment (``DEFAULT_VENV`` unless ``--venv``; never
jsnn's, never in CI) and pip-installs the peers' latest releases there. :func:`measure`, which
``benchmarks/lif_layer.py`` calls, runs the worker with that environment's python from the
repository root (so ``benchmarks`` imports; jsnn is not installed there), one fresh process per
variant; the worker prints its results as one JSON line, last. This module imports only the
standard library at the top: each framework is imported inside its worker.

What is measured (the Open Neuromorphic "SNN library benchmark", with its harness's flaws fixed):
one Linear(n -> n, with bias) feeding one LIF layer, a float32 standard-normal input of T steps
and batch B (fixed seed), forward and backward of ``spikes.sum()`` with respect to the Linear's
weight only (``torch.autograd.grad`` on the weight, ``jax.grad`` of a jitted function on the
kernel; the input needs no gradient). One checked call first (it compiles where the variant
compiles, and must give spikes and a finite, non-zero gradient: reported as ``spike_rate`` and
``grad_norm``), then ``--warmup`` untimed calls, then ``--repeats`` timed ones, each waited for
(``jax.block_until_ready``; ``torch.cuda.synchronize`` on CUDA; CPU torch is synchronous); the
median is reported. Peak memory: on a CPU the worker process's max RSS (one process per variant,
so numbers do not mix; it includes the framework's own libraries, about 0.5 GiB for torch), on a
GPU ``torch.cuda.max_memory_allocated`` or JAX's ``peak_bytes_in_use``.

The common neuron is u <- 0.8 u + I, spike when u > 1, hard reset to 0, ATan surrogate
(alpha 2: 1 / (1 + (pi x)^2)). Each peer is used the way its own documentation shows, as close to
that neuron as it allows:

- spyx 1.x (JAX, Flax NNX), variant "jit": ``spyx.nn.Sequential(nnx.Linear, spyx.nn.LIF(beta=0.8,
  threshold=1))`` driven by ``spyx.nn.run`` (one ``lax.scan`` over time-major input), split with
  ``nnx.split`` and ``jax.jit(jax.grad(...))`` as ``spyx.bench`` does. Deviations: spyx's LIF
  resets by subtraction (V -= spike * threshold; it has no hard reset), emits the spike of the
  membrane before this step's input (spikes lag one step), and keeps beta as a Param clipped to
  [0, 1] (fixed at 0.8 here, not differentiated); the Linear runs per step inside the scan, with
  ``nnx.Linear``'s default (LeCun normal) initialisation, so its spike rate differs from the torch
  peers'; the ATan surrogate is ``spyx.axn.custom`` with the derivative above
  (``spyx.axn.arctan(k=1)`` is the same divided by pi).
- SpikingJelly 2.x (PyTorch): ``nn.Sequential(layer.Linear, neuron.LIFNode(tau=5.0,
  decay_input=False, v_threshold=1.0, v_reset=0.0, surrogate_function=surrogate.ATan(alpha=2.0)))``
  in multi-step mode (``functional.set_step_mode(net, "m")``, input [T, B, n]), ``reset_net``
  before every call. This is exactly the common neuron, except that a spike fires at u >= 1 and the
  reset keeps its gradient (``detach_reset=False``, the default). SpikingJelly 2 has no CuPy
  backend any more: its LIF is a registered operator whose CUDA implementation is picked by the
  environment variable ``SJ_LIF_CUDA_IMPLEMENTATION``, one variant each: "torch" (reference;
  on a CPU the registered CPU operator, a loop over time with a hand-written backward), "cuda"
  (native kernels, present only when SpikingJelly was built from source with
  ``SJ_BUILD_NATIVE_CUDA=1``), "triton" (CUDA only); and "compile", ``torch.compile`` of the
  network with SpikingJelly's automatic choice.
- snnTorch (PyTorch), variant "eager": ``torch.nn.Linear`` and ``snn.Leaky(beta=0.8,
  threshold=1.0, spike_grad=surrogate.atan(alpha=2.0), reset_mechanism="zero")`` in a Python loop
  over the steps, as its tutorials do. snnTorch applies the reset at the start of the next step,
  which gives the same spikes as the common neuron, but its reset signal is detached from the
  graph. snnTorch ships no ``torch.compile`` path, so it is measured eager only.
- Norse (PyTorch), variants "eager" and "compile" (``torch.compile`` of the whole model):
  ``torch.nn.Sequential(torch.nn.Linear, Lift(LIFBoxCell(p)))`` on [T, B, n] (``Lift`` runs the
  cell over the time axis, as in its docstring); LIFBox is Norse's LIF without a synaptic current,
  which Norse 1.1 has only as a cell. Norse integrates v <- v + dt tau_mem_inv (v_leak - v + I);
  with dt tau_mem_inv = 0.2, v_leak = 0, v_reset = 0 and v_th = 0.2 this is the common neuron
  scaled by 1/5 (v = u / 5: same spikes). Norse has no ATan surrogate: its default "super"
  (SuperSpike, 1 / (1 + |x|)^2 in Norse 1.1, on the scaled v) is used; its reset keeps its
  gradient.

The torch peers get the same weights and input (seeded the same way) and so the same spikes;
spyx's differ (see above). Every result also carries these deviations in its "notes". The GPU
paths (CUDA devices, SpikingJelly's cuda and triton variants, spyx with ``jax[cuda13]``) are
written but were not tested: no GPU was available when this was written. On a machine with
``nvidia-smi``, ``--install`` adds ``jax[cuda13]`` for spyx (the CUDA major version of PyPI's
torch wheels).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.common import (
    last_line,
    log,
    max_rss_mib,
    run_json_worker,
    subset_of,
    timed_runs,
)

PEERS: tuple[str, ...] = ("spyx", "spikingjelly", "snntorch", "norse")
# Not a peer: PyTorch's Linear + ReLU, the floor of the torch peers as "floor" is jsnn's.
TORCH_FLOOR = "torch_floor"
DEFAULT_VENV: Path = Path.home() / ".cache" / "jsnn-bench-peers"
SEED = 0

REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "spyx": ("spyx",),
    "spikingjelly": ("torch", "spikingjelly"),
    "snntorch": ("torch", "snntorch"),
    "norse": ("torch", "norse"),
    TORCH_FLOOR: ("torch",),
}
# Per peer: variant (--variant) -> its label in the results.
VARIANTS: dict[str, dict[str, str]] = {
    "spyx": {"jit": "jit (lax.scan via spyx.nn.run)"},
    "spikingjelly": {
        "torch": "torch backend",
        "cuda": "cuda backend",
        "triton": "triton backend",
        "compile": "torch.compile",
    },
    "snntorch": {"eager": "eager"},
    "norse": {"eager": "eager", "compile": "torch.compile"},
    TORCH_FLOOR: {"eager": "Linear + ReLU, no recurrence"},
}
FIELDS = (
    "framework",
    "variant",
    "version",
    "device",
    "median_s",
    "times_s",
    "peak_mib",
    "memory_kind",
    "spike_rate",
    "grad_norm",
    "notes",
    "skipped",
)
NOTES = {
    "spyx": "spyx.nn.LIF: soft reset (V -= spike * threshold, no hard reset in spyx), spike from "
    "the membrane before this step's input (one-step lag), beta a Param clipped to [0, 1] (0.8, "
    "not differentiated); Linear per step inside spyx.nn.run's scan, nnx.Linear default init "
    "(LeCun normal, so another spike rate); ATan(alpha=2) via spyx.axn.custom; grad w.r.t. the "
    "kernel only",
    "spikingjelly": "LIFNode(tau=5, decay_input=False, v_reset=0, ATan(alpha=2)), multi-step: the "
    "common neuron, but spikes at u >= 1 and the reset keeps its gradient (detach_reset=False)",
    "snntorch": "Leaky(beta=0.8, reset_mechanism='zero', atan(alpha=2)) in a per-step loop: same "
    "spikes as the common neuron; reset applied at the next step and detached from the graph; no "
    "torch.compile path in snnTorch",
    "norse": "Lift(LIFBoxCell) (LIF without synaptic current) with dt*tau_mem_inv=0.2, v_th=0.2: "
    "the common neuron scaled by 1/5; surrogate Norse's SuperSpike 1/(1+|x|)^2 on the scaled "
    "membrane (Norse has no ATan); the reset keeps its gradient",
    TORCH_FLOOR: "the torch peers' lower bound: the same Linear, a ReLU, no time recurrence",
}


# ----------------------------------------------------------------------------------------------
# Installing


def venv_python(venv: Path) -> Path:
    return Path(venv) / "bin" / "python"


def _check_peers(peers: Sequence[str]) -> None:
    unknown = [peer for peer in peers if peer not in PEERS]
    if unknown or not peers:
        raise ValueError(f"peers must be some of {', '.join(PEERS)}; got {list(peers)!r}")


def install(venv: Path = DEFAULT_VENV, peers: Sequence[str] = PEERS) -> dict[str, str]:
    """Creates ``venv`` (``python -m venv``) if it is missing and pip-installs each peer with its
    dependencies. Returns peer -> installed version, or "not installed: <reason>"."""
    _check_peers(peers)
    python = venv_python(venv)
    if not python.exists():
        log(f"creating the virtual environment {venv}")
        done = subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True
        )
        if done.returncode:
            reason = f"not installed: could not create {venv}: {last_line(done.stderr)}"
            log(reason)
            return dict.fromkeys(peers, reason)
    gpu = shutil.which("nvidia-smi") is not None
    versions = {}
    for peer in peers:
        requirements = [*REQUIREMENTS[peer], *(["jax[cuda13]"] if gpu and peer == "spyx" else [])]
        log(f"{peer}: pip install {' '.join(requirements)} into {venv}")
        done = subprocess.run(
            [str(python), "-m", "pip", "install", *requirements], stderr=subprocess.PIPE, text=True
        )
        if done.returncode:
            versions[peer] = (
                f"not installed: pip exited with {done.returncode}: {last_line(done.stderr)}"
            )
        else:
            done = subprocess.run(
                [str(python), "-c", f"import importlib.metadata as m; print(m.version({peer!r}))"],
                capture_output=True,
                text=True,
            )
            versions[peer] = (
                done.stdout.strip()
                if done.returncode == 0
                else f"not installed: no version found: {last_line(done.stderr)}"
            )
        log(f"{peer}: {versions[peer]}")
    return versions


# ----------------------------------------------------------------------------------------------
# Measuring, from the caller's side


def _skipped(peer: str, variant: str, reason: str) -> dict:
    return {
        **dict.fromkeys(FIELDS),
        "framework": peer,
        "variant": VARIANTS[peer][variant],
        "skipped": reason,
    }


def _check_measure(peer: str, sizes: dict[str, int], warmup: int, timeout: float) -> None:
    if peer not in VARIANTS:
        raise ValueError(f"peer must be one of {', '.join(VARIANTS)}; got {peer!r}")
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
    if not (isinstance(timeout, int | float) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")


def _run_worker(python: Path, peer: str, variant: str, arguments: list[str], timeout: float):
    command = [str(python), "-m", "benchmarks.peers", "--worker", peer, "--variant", variant]
    results, reason = run_json_worker([*command, *arguments], timeout)
    if reason is None:
        (result,) = results
        return result
    if reason.startswith("cannot run"):
        reason += "; install the peers with `python -m benchmarks.peers --install`"
    return _skipped(peer, variant, reason)


def measure(
    python: Path,
    peer: str,
    *,
    n: int,
    steps: int,
    batch: int,
    repeats: int,
    warmup: int,
    timeout: float,
) -> list[dict]:
    """Measures every variant of ``peer`` with ``python`` (the peers' environment), each in a
    fresh ``python -m benchmarks.peers --worker`` subprocess run from the repository root, given
    ``timeout`` seconds. One dict per variant; one that cannot run has "skipped": the reason."""
    sizes = {"n": n, "steps": steps, "batch": batch, "repeats": repeats}
    _check_measure(peer, sizes, warmup, timeout)
    arguments = [f"--{name}={value}" for name, value in {**sizes, "warmup": warmup}.items()]
    results = []
    for variant in VARIANTS[peer]:
        log(f"  {peer}, {VARIANTS[peer][variant]}: a worker for n={n}, T={steps}, B={batch}")
        results.append(_run_worker(Path(python), peer, variant, arguments, timeout))
    return results


# ----------------------------------------------------------------------------------------------
# The worker, inside the peers' environment: imports its library only here


def _checked(spike_rate: float, grad_norm: float) -> tuple[float, float]:
    if not spike_rate > 0:
        raise RuntimeError(f"no spikes (spike rate {spike_rate})")
    if not (math.isfinite(grad_norm) and grad_norm > 0):
        raise RuntimeError(f"the weight's gradient is zero or not finite (norm {grad_norm})")
    return spike_rate, grad_norm


def _result(peer: str, variant: str, times: list[float], **fields) -> dict:
    return {
        **dict.fromkeys(FIELDS),
        "framework": peer,
        "variant": VARIANTS[peer][variant],
        "version": importlib.metadata.version("torch" if peer == TORCH_FLOOR else peer),
        "median_s": statistics.median(times),
        "times_s": times,
        **fields,
    }


def _torch_input(config: argparse.Namespace):
    import torch

    torch.manual_seed(SEED)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch, device, torch.randn(config.steps, config.batch, config.n, device=device)


def _torch_measure(
    peer: str,
    variant: str,
    config: argparse.Namespace,
    forward: Callable[[], object],
    weight,
    notes: str,
) -> dict:
    """Times ``forward`` and the gradient of its spikes' sum with respect to ``weight``."""
    import torch

    def run():
        spikes = forward()
        (grad,) = torch.autograd.grad(spikes.sum(), weight)
        return spikes, grad

    cuda = weight.device.type == "cuda"
    spikes, grad = run()
    rate, norm = _checked(spikes.float().mean().item(), grad.norm().item())
    sync = torch.cuda.synchronize if cuda else lambda: None
    times = timed_runs(run, lambda _: sync(), config.repeats, warmup=config.warmup)
    return _result(
        peer,
        variant,
        times,
        device=torch.cuda.get_device_name(weight.device) if cuda else "cpu",
        peak_mib=torch.cuda.max_memory_allocated() / 2**20 if cuda else max_rss_mib(),
        memory_kind="torch.cuda.max_memory_allocated" if cuda else "process max RSS",
        spike_rate=rate,
        grad_norm=norm,
        notes=notes,
    )


def _spyx(variant: str, config: argparse.Namespace) -> dict:
    import jax
    import jax.numpy as jnp
    import spyx
    from flax import nnx

    atan = spyx.axn.custom(bwd=lambda v: 1 / (1 + (jnp.pi * v) ** 2), fwd=spyx.axn.heaviside)
    rngs = nnx.Rngs(SEED)
    model = spyx.nn.Sequential(
        nnx.Linear(config.n, config.n, rngs=rngs),
        spyx.nn.LIF((config.n,), beta=0.8, threshold=1.0, activation=atan, rngs=rngs),
    )
    graphdef, kernel, rest = nnx.split(model, nnx.PathContains("kernel"), ...)
    x = jax.random.normal(jax.random.key(SEED), (config.steps, config.batch, config.n))

    def loss(kernel, rest, x):
        spikes, _ = spyx.nn.run(nnx.merge(graphdef, kernel, rest), x)
        return spikes.sum(), spikes

    step = jax.jit(jax.grad(loss, has_aux=True))
    grad, spikes = jax.block_until_ready(step(kernel, rest, x))
    norm = math.sqrt(sum(float(jnp.sum(leaf**2)) for leaf in jax.tree.leaves(grad)))
    rate, norm = _checked(float(spikes.mean()), norm)
    times = timed_runs(
        lambda: step(kernel, rest, x), jax.block_until_ready, config.repeats, warmup=config.warmup
    )
    device = jax.devices()[0]
    stats = (device.memory_stats() or {}) if device.platform != "cpu" else {}
    gpu = "peak_bytes_in_use" in stats
    return _result(
        "spyx",
        variant,
        times,
        device=device.device_kind if device.platform != "cpu" else "cpu",
        peak_mib=stats["peak_bytes_in_use"] / 2**20 if gpu else max_rss_mib(),
        memory_kind="jax peak_bytes_in_use" if gpu else "process max RSS",
        spike_rate=rate,
        grad_norm=norm,
        notes=NOTES["spyx"],
    )


def _spikingjelly(variant: str, config: argparse.Namespace) -> dict:
    torch, device, x = _torch_input(config)
    if variant in ("cuda", "triton") and device.type != "cuda":
        return _skipped("spikingjelly", variant, f"the {variant} backend needs a CUDA device")
    if variant != "compile":
        os.environ["SJ_LIF_CUDA_IMPLEMENTATION"] = variant  # read when spikingjelly is imported
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    net = torch.nn.Sequential(
        layer.Linear(config.n, config.n),
        neuron.LIFNode(
            tau=5.0,
            decay_input=False,
            v_threshold=1.0,
            v_reset=0.0,
            surrogate_function=surrogate.ATan(alpha=2.0),
        ),
    ).to(device)
    functional.set_step_mode(net, "m")
    model = torch.compile(net) if variant == "compile" else net
    notes = NOTES["spikingjelly"]
    if device.type == "cuda":
        execution = "compile" if variant == "compile" else "eager"
        chosen = functional.neuron_implementation("lif", device, execution=execution)
        notes += f"; LIF implementation: {chosen['implementation']}"

    def forward():
        functional.reset_net(net)
        return model(x)

    return _torch_measure("spikingjelly", variant, config, forward, net[0].weight, notes)


def _snntorch(variant: str, config: argparse.Namespace) -> dict:
    torch, device, x = _torch_input(config)
    import snntorch
    from snntorch import surrogate

    linear = torch.nn.Linear(config.n, config.n).to(device)
    lif = snntorch.Leaky(
        beta=0.8, threshold=1.0, spike_grad=surrogate.atan(alpha=2.0), reset_mechanism="zero"
    ).to(device)

    def forward():
        mem = lif.reset_mem()
        spikes = []
        for step in range(config.steps):
            spike, mem = lif(linear(x[step]), mem)
            spikes.append(spike)
        return torch.stack(spikes)

    return _torch_measure("snntorch", variant, config, forward, linear.weight, NOTES["snntorch"])


def _norse(variant: str, config: argparse.Namespace) -> dict:
    torch, device, x = _torch_input(config)
    import norse.torch as norse

    dt = 1e-3
    p = norse.LIFBoxParameters(
        tau_mem_inv=torch.as_tensor(0.2 / dt, device=device),
        v_leak=torch.as_tensor(0.0, device=device),
        v_th=torch.as_tensor(0.2, device=device),
        v_reset=torch.as_tensor(0.0, device=device),
    )
    net = torch.nn.Sequential(
        torch.nn.Linear(config.n, config.n), norse.Lift(norse.LIFBoxCell(p, dt=dt))
    ).to(device)
    model = torch.compile(net) if variant == "compile" else net

    def forward():
        spikes, _ = model(x)
        return spikes

    return _torch_measure("norse", variant, config, forward, net[0].weight, NOTES["norse"])


def _torch_floor(variant: str, config: argparse.Namespace) -> dict:
    torch, device, x = _torch_input(config)
    linear = torch.nn.Linear(config.n, config.n).to(device)
    return _torch_measure(
        TORCH_FLOOR,
        variant,
        config,
        lambda: torch.relu(linear(x)),
        linear.weight,
        NOTES[TORCH_FLOOR],
    )


WORKERS: dict[str, Callable[[str, argparse.Namespace], dict]] = {
    "spyx": _spyx,
    "spikingjelly": _spikingjelly,
    "snntorch": _snntorch,
    "norse": _norse,
    TORCH_FLOOR: _torch_floor,
}


def _work(peer: str, variant: str, config: argparse.Namespace) -> dict:
    try:
        return WORKERS[peer](variant, config)
    except ImportError as error:
        return _skipped(
            peer,
            variant,
            f"not installed in {sys.executable}: {error} (install the peers with "
            "`python -m benchmarks.peers --install`)",
        )
    except Exception as error:  # a worker answers with the reason rather than a traceback
        return _skipped(peer, variant, f"{type(error).__name__}: {error}")


# ----------------------------------------------------------------------------------------------
# Command line


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description="Install the peer SNN frameworks (spyx, SpikingJelly, snnTorch, Norse) into "
        "a virtual environment of their own, or, run with that environment's python, measure "
        "one of them on the LIF-layer benchmark (Linear(n -> n) + LIF, forward and backward of "
        "the spikes' sum) and print the results as one JSON line (a list of dicts), last.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--install", action="store_true", help="install the peers")
    mode.add_argument("--worker", choices=VARIANTS, help="measure this peer (in this process)")
    add = parser.add_argument
    add("--venv", type=Path, default=DEFAULT_VENV, help="--install: the virtual environment")
    add("--peers", type=subset_of(PEERS), default=PEERS, help="--install: comma-separated peers")
    add(
        "--variant",
        help="--worker: one variant (spyx: jit; spikingjelly: torch, cuda, triton, compile; "
        "snntorch: eager; norse: eager, compile); all of the peer's, in this one process, if "
        "left out",
    )
    add("--n", type=_positive, default=1024, help="neurons (and inputs) of the layer")
    add("--steps", type=_positive, default=100, help="time steps T")
    add("--batch", type=_positive, default=16, help="batch B")
    add("--repeats", type=_positive, default=10, help="timed calls")
    add("--warmup", type=_non_negative, default=1, help="untimed calls after the checked one")
    args = parser.parse_args(argv)
    if args.variant is not None and (
        args.worker is None or args.variant not in VARIANTS[args.worker]
    ):
        choices = ", ".join(VARIANTS[args.worker]) if args.worker else "none without --worker"
        parser.error(f"argument --variant: invalid choice {args.variant!r} (choose: {choices})")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.install:
        versions = install(args.venv, args.peers)
        print(json.dumps(versions))
        return
    variants = [args.variant] if args.variant else list(VARIANTS[args.worker])
    print(json.dumps([_work(args.worker, variant, args) for variant in variants]), flush=True)


if __name__ == "__main__":
    main()
