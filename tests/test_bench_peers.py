"""The peers' side of the LIF-layer benchmark answers, without raising, where the peers are not
installed (CI has none of them), and rejects bad arguments by name."""

import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import peers

ROOT = Path(__file__).resolve().parent.parent
TINY = {"n": 4, "steps": 2, "batch": 1, "repeats": 1, "warmup": 0, "timeout": 120}
# The first module each worker imports.
FIRST_IMPORT = {"spyx": "spyx", "spikingjelly": "torch", "snntorch": "torch", "norse": "torch"}


def _fake_python(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "venv" / "bin" / "python"
    path.parent.mkdir(parents=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def test_help():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.peers", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for text in ("LIF-layer benchmark", "--install", "--worker", "--variant", "--venv"):
        assert text in done.stdout


def test_import_leaves_the_frameworks_alone():
    modules = ("torch", "jax", "flax", "numpy", "spyx", "spikingjelly", "snntorch", "norse")
    code = f"import sys, benchmarks.peers; print([m for m in {modules!r} if m in sys.modules])"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("peer", peers.PEERS)
def test_measure_skips_a_peer_that_is_not_installed(peer):
    module = FIRST_IMPORT[peer]
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    results = peers.measure(Path(sys.executable), peer, **TINY)
    assert [result["variant"] for result in results] == list(peers.VARIANTS[peer].values())
    for result in results:
        assert list(result) == list(peers.FIELDS)
        assert result["framework"] == peer
        assert result["skipped"].startswith(f"not installed in {sys.executable}: ")
        assert f"No module named '{module}'" in result["skipped"]
        assert all(result[key] is None for key in peers.FIELDS[2:-1])


def test_worker_without_variant_answers_for_every_variant_on_its_last_line():
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.peers", "--worker", "norse", "--n", "4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.splitlines()[-1])
    assert [result["variant"] for result in results] == ["eager", "torch.compile"]
    assert all("No module named 'torch'" in result["skipped"] for result in results)


def test_measure_without_the_environment(tmp_path):
    missing = peers.venv_python(tmp_path / "venv")
    (result,) = peers.measure(missing, "snntorch", **TINY)
    assert result["skipped"].startswith(f"cannot run {missing} (No such file or directory)")
    assert "python -m benchmarks.peers --install" in result["skipped"]


def test_measure_reports_a_crashed_worker(tmp_path):
    python = _fake_python(tmp_path, "echo 'Fatal Python error: Aborted' >&2; exit 134")
    (result,) = peers.measure(python, "snntorch", **TINY)
    assert result["skipped"] == "the worker exited with 134: Fatal Python error: Aborted"


def test_measure_reports_a_killed_worker(tmp_path):
    python = _fake_python(tmp_path, "echo 'Killed' >&2; kill -9 $$")
    (result,) = peers.measure(python, "snntorch", **TINY)
    assert result["skipped"] == "the worker was killed by signal 9: Killed"


def test_measure_ends_a_worker_that_runs_too_long_with_its_children(tmp_path):
    python = _fake_python(tmp_path, "sleep 60 & wait")
    start = time.perf_counter()
    (result,) = peers.measure(python, "snntorch", **{**TINY, "timeout": 0.5})
    assert result["skipped"] == "timed out after 0.5 s"
    assert time.perf_counter() - start < 30  # the sleep holding the pipes was ended too


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"peer": "brian2"},
            "peer must be one of spyx, spikingjelly, snntorch, norse, torch_floor; got 'brian2'",
        ),
        ({"n": 0}, "n must be a positive integer, got 0"),
        ({"steps": 2.5}, "steps must be a positive integer, got 2.5"),
        ({"repeats": True}, "repeats must be a positive integer, got True"),
        ({"warmup": -1}, "warmup must be a non-negative integer, got -1"),
        ({"timeout": 0}, "timeout must be a positive number of seconds, got 0"),
    ],
)
def test_measure_rejects_bad_arguments(change, message):
    arguments = {"peer": "spyx", **TINY, **change}
    peer = arguments.pop("peer")
    with pytest.raises(ValueError, match=re.escape(message)):
        peers.measure(Path(sys.executable), peer, **arguments)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--worker", "spyx", "--n", "0"], "argument --n: expected a positive integer, got '0'"),
        (
            ["--worker", "spyx", "--warmup", "-1"],
            "argument --warmup: expected a non-negative integer, got '-1'",
        ),
        (
            ["--worker", "norse", "--variant", "cupy"],
            "argument --variant: invalid choice 'cupy' (choose: eager, compile)",
        ),
        (
            ["--install", "--peers", "spyx,brian2"],
            "argument --peers: expected a comma-separated subset of spyx, spikingjelly, snntorch, "
            "norse, got 'spyx,brian2'",
        ),
        ([], "one of the arguments --install --worker is required"),
    ],
)
def test_command_line_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        peers.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_install_rejects_unknown_peers_before_creating_anything(tmp_path):
    with pytest.raises(ValueError, match=re.escape("got ['norse', 'brian2']")):
        peers.install(tmp_path / "venv", peers=["norse", "brian2"])
    assert not (tmp_path / "venv").exists()


def test_install_reports_a_failed_pip_and_does_not_raise(tmp_path):
    python = _fake_python(
        tmp_path, "echo 'ERROR: No matching distribution found for spyx' >&2; exit 1"
    )
    versions = peers.install(python.parent.parent, peers=["spyx"])
    assert versions == {
        "spyx": "not installed: pip exited with 1: ERROR: No matching distribution found for spyx"
    }


def test_install_returns_the_installed_versions(tmp_path):
    python = _fake_python(tmp_path, 'if [ "$1" = -c ]; then echo 9.9.9; fi')
    assert peers.install(python.parent.parent, peers=["snntorch", "norse"]) == {
        "snntorch": "9.9.9",
        "norse": "9.9.9",
    }
