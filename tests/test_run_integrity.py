"""A workdir that cannot lie about its checkpoints: a changed config is refused, a flipped byte
or a damaged step directory is found and passed over, a NaN state is never saved, metrics hold
one record per step and kind after any resume, SIGTERM and Ctrl-C save before stopping, two
runs cannot share a workdir, and a full disk is reported in one line."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import re
import shutil
import signal
import struct
import subprocess
import sys

import pytest
from tensorboardX.proto import event_pb2

from jsnn import run, train
from jsnn.config import Config
from jsnn.train.checkpoint import Checkpointer, fingerprint

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(workdir, **overrides) -> Config:
    fields = {"epochs": 2, "batch_size": 64, "log_every": 5, "progress": False}
    fields.update(tensorboard=False, checkpoint_every=10, keep_checkpoints=10)
    return Config().override({"train.workdir": str(workdir), **fields, **overrides})


def _template(config: Config) -> train.TrainState:
    dataset = run.build_dataset(config)
    return train.TrainState.create(
        run.build_model(config, dataset), train.optimizer(config.train, 22)
    )


def _pairs(workdir) -> list[tuple[int, str]]:
    return [
        (r["step"], r["kind"]) for r in train.read_metrics(pathlib.Path(workdir) / "metrics.jsonl")
    ]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-epoch run (22 steps each) with checkpoints 10, 20, 22, 30, 40, 44."""
    workdir = tmp_path_factory.mktemp("finished")
    metrics = run.run(_config(workdir))
    return workdir, metrics


def _copy(finished, tmp_path) -> pathlib.Path:
    workdir = tmp_path / "copy"
    shutil.copytree(finished[0], workdir)
    return workdir


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"model.time_steps": 6}, "model.time_steps"),
        ({"model.neuron": "if"}, "model.neuron"),
        ({"train.seed": 1}, "train.seed"),
        ({"train.lr": 0.1}, "train.lr"),
        ({"train.batch_size": 32}, "train.batch_size"),
        ({"train.optimizer": "sgd"}, "train.optimizer"),
        ({"model.name": "fdg_toy"}, "model.name"),
    ],
)
def test_a_changed_config_is_refused_and_config_json_kept(finished, tmp_path, changes, field):
    workdir = _copy(finished, tmp_path)
    before = (workdir / "config.json").read_bytes()
    config = _config(workdir, **changes)
    with pytest.raises(train.ConfigChanged, match=rf"Differences: {field}: "):
        run.run(config)
    assert (workdir / "config.json").read_bytes() == before
    assert Checkpointer(workdir, keep=10).latest_step() == 44  # nothing set aside


def test_fewer_epochs_than_trained_are_refused(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    with pytest.raises(train.ConfigChanged, match=r"trained for 44 steps; epochs 1 \(22 steps\)"):
        run.run(_config(workdir, epochs=1))
    assert json.loads((workdir / "config.json").read_text())["train"]["epochs"] == 2


def test_more_epochs_resume_and_tensorboard_gets_one_point_per_step(finished, tmp_path, capsys):
    workdir = _copy(finished, tmp_path)
    (workdir / "metrics.jsonl").open("a").write('{"step": 50, "kind": "tra')  # torn by a kill
    config = _config(workdir, epochs=3, tensorboard=True)
    run.run(config)
    out = capsys.readouterr().out
    assert "resuming with changed train.epochs 2 -> 3, train.tensorboard False -> True" in out
    assert json.loads((workdir / "config.json").read_text())["train"]["epochs"] == 3
    pairs = _pairs(workdir)
    assert len(pairs) == len(set(pairs)) and (66, "eval") in pairs
    points = _board_points(workdir / "tensorboard")
    assert len(points) == len(set(points)) and ("eval/accuracy", 44) in points
    assert ("train/loss", 45) in points and ("train/loss", 65) in points


def _board_points(directory) -> list[tuple[str, int]]:
    """(tag, step) of every scalar in the TensorBoard event files under ``directory``."""
    points = []
    for path in pathlib.Path(directory).rglob("events.out.tfevents.*"):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            points += [(value.tag, event.step) for value in event.summary.value]
    return points


def _data_files(workdir, step) -> list[pathlib.Path]:
    """The files holding the arrays of checkpoint ``step`` (the OCDBT data files)."""
    state = pathlib.Path(workdir) / "checkpoints" / str(step) / "state"
    return sorted(path for path in state.rglob("*") if path.is_file() and path.parent.name == "d")


def _locate(sizes: list[tuple[pathlib.Path, int]], offset: int) -> tuple[pathlib.Path, int]:
    """The file and the offset in it of byte ``offset`` of the files' concatenation."""
    for path, size in sizes:
        if offset < size:
            return path, offset
        offset -= size
    raise IndexError(offset)


def test_every_flipped_byte_is_found_or_harmless(finished, tmp_path, capsys):
    # Orbax's data files also hold bytes no restore reads (superseded B-tree nodes, whose
    # layout varies from run to run): a flip there leaves the state as saved. Every other flip
    # must be found, and the checkpoint before it restored.
    template = _template(_config(tmp_path))
    saved = fingerprint(
        Checkpointer(finished[0], keep=10).restore(template)[0].checkpoint_items(), {}
    )
    sizes = [(p.relative_to(finished[0]), p.stat().st_size) for p in _data_files(finished[0], 44)]
    total, found = sum(size for _, size in sizes), 0
    for flip in range(12):
        relative, offset = _locate(sizes, (2 * flip + 1) * total // 24)  # spread out
        workdir = tmp_path / f"flip{flip}"
        shutil.copytree(finished[0], workdir)
        data = bytearray((workdir / relative).read_bytes())
        data[offset] ^= 0x10
        (workdir / relative).write_bytes(bytes(data))
        state, record = Checkpointer(workdir, keep=10).restore(template)
        out = capsys.readouterr().out.splitlines()
        if int(state.step) == 44:
            assert fingerprint(state.checkpoint_items()) == saved and not out
            continue
        found += 1
        assert int(state.step) == 40 and record["epoch"] == 1, (relative, offset)
        assert len(out) == 1 and out[0].startswith(
            f"checkpoint {workdir}/checkpoints/44 is damaged"
        )
        assert (workdir / "damaged_checkpoints" / "44").is_dir()
    assert found >= 6  # most of the bytes are the arrays'
    # A record changed in a way that is still JSON (a config value, the epoch) is found too.
    workdir = tmp_path / "record"
    shutil.copytree(finished[0], workdir)
    path = workdir / "checkpoints" / "44" / "record" / "metadata"
    path.write_text(path.read_text().replace('"lr": 0.01', '"lr": 0.02'))
    state, _ = Checkpointer(workdir, keep=10).restore(template)
    assert int(state.step) == 40 and "its record does not match" in capsys.readouterr().out


def test_damaged_empty_and_partial_steps_do_not_block_a_resume(finished, tmp_path, capsys):
    workdir = _copy(finished, tmp_path)
    checkpoints = workdir / "checkpoints"
    (checkpoints / "50").mkdir()  # empty
    shutil.copytree(checkpoints / "44", checkpoints / "48")
    shutil.rmtree(checkpoints / "48" / "state")  # partial
    data = max(_data_files(workdir, 44), key=lambda path: path.stat().st_size)
    content = data.read_bytes()  # its first part holds array chunks
    data.write_bytes(content[:100] + b"garbage" + content[107:])
    metrics = run.run(_config(workdir))
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines() if "is damaged" in line] == [
        str(checkpoints / step) for step in ("50", "48", "44")
    ]
    assert f"resuming {workdir} from step 40" in out
    assert metrics == pytest.approx(finished[1], rel=1e-5)  # the same run, from step 40
    assert Checkpointer(workdir, keep=10).latest_step() == 44
    pairs = _pairs(workdir)
    assert len(pairs) == len(set(pairs)) == len(_pairs(finished[0]))


def test_a_state_gone_infinite_is_not_saved(tmp_path):
    config = _config(tmp_path, epochs=1, lr=1e39, checkpoint_every=1)
    with pytest.raises(train.TrainingDiverged, match="at step 1 holds NaN or infinite values"):
        run.run(config)
    assert Checkpointer(tmp_path, keep=10).latest_step() is None


class _SignalAt:
    """The training batches, with ``signum`` sent to this process when step ``step`` is read."""

    def __init__(self, dataset, step, signum):
        self._dataset, self._step, self._signum = dataset, step, signum

    def __getattr__(self, name):
        return getattr(self._dataset, name)

    def train(self, **kwargs):
        batches, step, signum = self._dataset.train(**kwargs), self._step, self._signum

        class Batches:
            def __getitem__(self, index):
                if index == step:
                    os.kill(os.getpid(), signum)
                return batches[index]

        return Batches()


def test_sigterm_and_ctrl_c_save_then_stop_and_the_run_resumes(finished, tmp_path, capsys):
    # What a run killed before its first checkpoint leaves: records the rerun writes again,
    # the last one torn.
    records = [{"step": s, "kind": "train", "loss": -1.0} for s in (5, 10)]
    text = "".join(json.dumps(record) + "\n" for record in records) + '{"step": 15, "ki'
    (tmp_path / "metrics.jsonl").write_text(text)
    config = _config(tmp_path)
    dataset = run.build_dataset(config)
    handlers = [signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)]
    for step, signum in ((6, signal.SIGTERM), (30, signal.SIGINT)):
        with pytest.raises(SystemExit) as stopped:
            run.run(config, dataset=_SignalAt(dataset, step, signum))
        assert isinstance(stopped.value, train.Stopped)
        assert stopped.value.code == 128 + signum
        assert Checkpointer(tmp_path, keep=10).latest_step() == step + 1
        lines = capsys.readouterr().out.splitlines()
        name = signal.Signals(signum).name
        assert lines[-1] == (
            f"stopped by {name} at step {step + 1}: checkpoint saved in {tmp_path}; run the "
            "same command to resume"
        )
        assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)] == handlers
    metrics = run.run(config)
    assert metrics == pytest.approx(finished[1], rel=1e-5)
    expected = [*_pairs(finished[0]), (7, "train"), (31, "train")]  # the stops' records
    assert sorted(_pairs(tmp_path)) == sorted(expected)
    assert -1.0 not in [r.get("loss") for r in train.read_metrics(tmp_path / "metrics.jsonl")]


def test_a_second_run_on_a_workdir_is_refused_until_the_first_ends(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pathlib, sys, time; from jsnn.train import workdir; "
            "held = workdir.lock(pathlib.Path(sys.argv[1])); print('held', flush=True); "
            "time.sleep(600)",
            str(workdir),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        before = (workdir / "metrics.jsonl").read_bytes()
        with pytest.raises(train.WorkdirBusy, match=rf"in use by another run \(pid {holder.pid} "):
            run.run(_config(workdir))
        assert (workdir / "metrics.jsonl").read_bytes() == before
    finally:
        holder.kill()  # a killed run leaves no stale lock
        holder.wait()
    assert run.run(_config(workdir)) == pytest.approx(finished[1], rel=1e-6)


_TENSORSTORE_FULL = (
    'RESOURCE_EXHAUSTED: Error writing "params/w/0" in OCDBT database at local file "{}": '
    "Failed to write 535749 bytes to file 4: No space left on device [os_error_code='28']"
)


@pytest.mark.parametrize("where", ["checkpoint", "metrics"])
def test_a_full_disk_is_reported_in_one_line(tmp_path, monkeypatch, where):
    def checkpoint_full(self, state, record):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as cause:  # as TensorStore's error arrives: a ValueError over the cause
            raise ValueError(_TENSORSTORE_FULL.format(tmp_path)) from cause

    def metrics_full(self, kind, step, scalars):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    if where == "checkpoint":
        monkeypatch.setattr(Checkpointer, "save", checkpoint_full)
    else:
        monkeypatch.setattr(train.metrics.MetricWriter, "write", metrics_full)
    with pytest.raises(
        train.DiskFull, match=rf"^the disk of workdir '{tmp_path}' is full: "
    ) as full:
        run.run(_config(tmp_path, epochs=1, log_every=10))
    assert "\n" not in str(full.value) and full.value.__suppress_context__
    assert full.value.errno == errno.ENOSPC


def _can_mount_tmpfs() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare (user namespaces) for a tmpfs")
def test_a_really_full_disk_ends_the_run_with_a_short_message(tmp_path):
    # A 200 KiB tmpfs holds config.json and metrics but not the first checkpoint (0.4 MB).
    workdir = tmp_path / "small"
    workdir.mkdir()
    flags = (
        "--train.epochs 1 --train.checkpoint-every 1 --train.progress false "
        "--train.tensorboard false"
    )
    script = (
        f"mount -t tmpfs -o size=200k tmpfs {workdir} && exec {sys.executable} "
        f"{ROOT / 'tests' / 'scripts' / 'train_digits.py'} {flags} --train.workdir {workdir}"
    )
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    full = [line for line in lines if line.startswith("jsnn.train.workdir.DiskFull")]
    assert len(full) == 1, result.stderr
    assert re.fullmatch(
        rf"jsnn.train.workdir.DiskFull: the disk of workdir '{workdir}' is full: checkpoint 1 "
        rf"needs about 0\.\d MB and {workdir}/checkpoints has 0\.\d MB free",
        full[0],
    )
    assert len(lines) < 20, result.stderr  # the trace of fit's own frames, nothing else
