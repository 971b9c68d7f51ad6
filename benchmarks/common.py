"""What every benchmark script shares: timing, memory, the run's provenance and RESULTS.md.

Only the standard library at import time: the peers' worker (:mod:`benchmarks.peers`) imports
this module inside the peers' own virtual environment, where jsnn is not installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import resource
import shlex
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = """# Benchmark results

Each section below is one run of a script in `benchmarks/`, appended by the script itself
(newest last): date, device, library versions, git commit ("+dirty": with uncommitted
changes), the exact command, and its tables. Timings from a shared or busy machine are noisy;
the load average during the run is recorded with them. Rows marked "extrapolated" were not run
whole; each section says how they were computed.
"""

_CLOCK = {"start": time.perf_counter()}


@dataclasses.dataclass(frozen=True)
class DataShape:
    """What :func:`jsnn.run.build_model` needs of a data set, for random-data benchmarks."""

    num_classes: int
    input_shape: tuple[int, ...]


def _positive_list(convert, noun: str, example: str):
    """An argparse type: comma-separated positive ``noun`` read by ``convert``."""

    def parse(text: str) -> tuple:
        try:
            values = tuple(convert(item) for item in text.split(",") if item.strip())
        except ValueError as error:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {noun}, got {text!r}"
            ) from error
        if not values or any(not math.isfinite(v) or v <= 0 for v in values):
            raise argparse.ArgumentTypeError(f"expected positive {noun}, got {text!r}")
        return values

    parse.__doc__ = f"An argparse type: comma-separated positive {noun}, e.g. ``{example}``."
    return parse


positive_ints = _positive_list(int, "integers", "1024,2048")
positive_floats = _positive_list(float, "numbers", "0.1,4")


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for the tables: ``-`` for none, thousands separated (no decimals) from 1,000."""
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def subset_of(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated, non-empty subset of ``allowed`` (repeats dropped)."""

    def parse(text: str) -> tuple[str, ...]:
        values = tuple(item.strip() for item in text.split(",") if item.strip())
        wrong = [value for value in values if value not in allowed]
        if not values or wrong:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated subset of {', '.join(allowed)}, got {text!r}"
            )
        return tuple(dict.fromkeys(values))

    return parse


def restart_clock() -> None:
    _CLOCK["start"] = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - _CLOCK["start"]


def log(message: str) -> None:
    print(f"[{elapsed():7.1f}s] {message}", flush=True)


def timed_runs(
    run: Callable[[], object], sync: Callable[[object], object], repeats: int, *, warmup: int = 1
) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``run`` after ``warmup`` untimed ones; every
    call is waited for with ``sync`` (``jax.block_until_ready``, ``torch.cuda.synchronize``) so
    asynchronous dispatch is not mistaken for speed."""
    for _ in range(warmup):
        sync(run())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(run())
        times.append(time.perf_counter() - start)
    return times


def median_time(
    run: Callable[[], object], sync: Callable[[object], object], repeats: int, *, warmup: int = 1
) -> float:
    return statistics.median(timed_runs(run, sync, repeats, warmup=warmup))


def last_line(text: str) -> str:
    """The last non-blank line of ``text``, for reasons given in one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def run_json_worker(command: Sequence[str], timeout: float) -> tuple[object, str | None]:
    """Runs ``command`` from the repository root and parses its last line of output as JSON.

    Returns ``(value, None)``, or ``(None, reason)`` when it could not start, ran past
    ``timeout`` seconds (its whole process group is killed: compilers' helper processes too) or
    ended without a JSON line.
    """
    try:
        process = subprocess.Popen(
            list(command),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: a timeout ends its helpers too
        )
    except OSError as error:
        return None, f"cannot run {command[0]} ({error.strerror})"
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return None, f"timed out after {timeout:g} s"
    try:
        return json.loads(stdout.splitlines()[-1]), None
    except (IndexError, ValueError):
        code = process.returncode
        ended = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
        return None, f"the worker {ended}: {last_line(stderr)}"


def compile_timed(jitted, *args, compiler_options: dict | None = None) -> tuple[object, float]:
    """``jitted.lower(*args).compile(compiler_options)`` and the seconds it took; the options
    are added to those ``jitted`` was made with."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile(compiler_options)
    return compiled, time.perf_counter() - start


def temp_mib(compiled) -> float | None:
    """XLA's temporary buffers of a compiled function (arguments and outputs apart)."""
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # not every backend reports it
        return None
    return None if analysis is None else analysis.temp_size_in_bytes / 2**20


def max_rss_mib() -> float:
    """The process's peak resident set since it started."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_mib() -> tuple[float, str]:
    """The JAX device's peak memory in use (accelerators) or the process's peak resident set
    (CPU: a crude upper bound of what JAX needed, both since the start)."""
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            return stats["peak_bytes_in_use"] / 2**20, "device peak bytes in use"
    return max_rss_mib(), "process max RSS"


def host_memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return float("nan")


def git_commit(script: str | Path) -> str:
    """The short commit, "+dirty" with changes to tracked files or ``script`` uncommitted."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = any(
            git("status", "--porcelain", *extra)
            for extra in (["--untracked-files=no"], ["--", str(Path(script).resolve())])
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


@dataclasses.dataclass(frozen=True)
class Run:
    """Where a benchmark runs, and the 1-minute load average when it began."""

    device: str
    versions: str
    load_start: float


def start_jax_run() -> Run:
    """Restarts the clock and logs the JAX device, the library versions and the load."""
    import flax
    import jax

    restart_clock()
    device = jax.devices()[0]
    run = Run(
        device=f"{device.device_kind} ({device.platform}, {jax.device_count()} device(s))",
        versions=f"jax {jax.__version__}, flax {flax.__version__}",
        load_start=os.getloadavg()[0],
    )
    log(f"device: {run.device}, {run.versions}; load average {run.load_start:.2f}")
    return run


def publish(
    script: str, command: Sequence[str], body: list[str], *, results: Path, run: Run
) -> str:
    """Appends one run's section to ``results`` and prints it: title, device, versions, commit,
    command, wall time and load, then the ``body`` lines. Returns the section's text."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {script}, {now}",
        "",
        f"- device: {run.device}; {os.cpu_count()} CPU cores, {host_memory_gib():.0f} GiB of host "
        "memory",
        f"- {run.versions}, commit {git_commit(Path(__file__).with_name(script + '.py'))}",
        f"- command: `{shlex.join(['python', '-m', f'benchmarks.{script}', *command])}`",
        f"- wall time {elapsed():.0f} s; load average (1 min) {run.load_start:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end",
        "",
        *body,
    ]
    text = "\n".join(lines) + "\n"
    append_results(results, text)
    print("\n" + text, flush=True)
    log(f"appended to {results}")
    return text


def append_results(path: Path, text: str) -> None:
    """Appends ``text`` to ``path``, starting the file with :data:`HEADER` if it is new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(HEADER)
    with path.open("a") as file:
        file.write("\n" + text)
