"""Metrics a person can plot: JSON lines, TensorBoard, and lines on the console."""

from __future__ import annotations

import json
import pathlib
import shutil
from collections.abc import Callable

__all__ = ["MetricWriter", "plot_curves", "plot_scalars", "read_metrics", "save_figure"]


class MetricWriter:
    """Appends ``{"step": ..., "kind": "train" | "eval", ...}`` records to ``metrics.jsonl`` and
    the same scalars to TensorBoard under ``workdir/tensorboard``. Only one process writes.

    ``metrics.jsonl`` is the record of the run: on resume the TensorBoard logs are rebuilt from
    it, so both hold exactly one point per step, kind and name.
    """

    def __init__(self, workdir: str | pathlib.Path, *, enabled: bool, tensorboard: bool):
        self.path = pathlib.Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self._board_dir = pathlib.Path(workdir) / "tensorboard"
        self._tensorboard = tensorboard
        self._board = None

    def drop_after(self, step: int) -> None:
        """On resume (``step`` 0 for a fresh start): forget the records the run will write
        again: those past the restored step, and the epoch-start records at it (a state saved
        at an epoch's end comes before the next epoch's start hooks). A torn last line (a run
        killed mid-write) is dropped too."""
        if not self.enabled:
            return
        records = read_metrics(self.path) if self.path.exists() else []
        kept = [
            record
            for record in records
            if record["step"] < step or (record["step"] == step and record["kind"] != "epoch_start")
        ]
        self.path.write_text("".join(json.dumps(record) + "\n" for record in kept))
        if self._tensorboard:
            shutil.rmtree(self._board_dir, ignore_errors=True)
            for record in kept:
                self._to_board(record)
            if self._board is not None:
                self._board.flush()

    def write(self, kind: str, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "kind": kind, **scalars}
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        self._to_board(record)
        if self._board is not None:
            self._board.flush()

    def _to_board(self, record: dict) -> None:
        if not self._tensorboard:
            return
        if self._board is None:
            from tensorboardX import SummaryWriter

            self._board = SummaryWriter(str(self._board_dir))
        kind, step = record["kind"], record["step"]
        for name, value in record.items():
            if name not in ("kind", "step"):
                self._board.add_scalar(f"{kind}/{name}", value, step)

    def close(self) -> None:
        if self._board is not None:
            self._board.close()


def read_metrics(path: str | pathlib.Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file, without a torn last line (a run killed while
    writing it); ValueError naming the line if any other line is not JSON."""
    lines = pathlib.Path(path).read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):
                break
            raise ValueError(f"{path} line {number} is not a JSON record ({error})") from None
    return records


def save_figure(figure, workdir: str | pathlib.Path, name: str) -> pathlib.Path:
    """Writes ``figure`` as ``workdir/name`` through the Agg canvas: no pyplot, so a notebook's
    own matplotlib backend and figures are left alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.tight_layout()
    path = pathlib.Path(workdir) / name
    figure.savefig(path, dpi=100)
    return path


def plot_curves(workdir: str | pathlib.Path) -> pathlib.Path:
    """Loss and accuracy curves (train per log interval, test per epoch) as ``curves.png``."""
    from matplotlib.figure import Figure

    records = read_metrics(pathlib.Path(workdir) / "metrics.jsonl")
    figure = Figure(figsize=(10, 4))
    axes = figure.subplots(1, 2)
    for kind in ("train", "eval"):
        points = [r for r in records if r["kind"] == kind]
        steps = [r["step"] for r in points]
        label = "test" if kind == "eval" else kind
        for axis, name in zip(axes, ("loss", "accuracy"), strict=True):
            axis.plot(
                steps,
                [r[name] for r in points],
                marker="." if kind == "eval" else None,
                label=label,
            )
            axis.set_xlabel("step")
            axis.set_ylabel(name)
            axis.legend()
    return save_figure(figure, workdir, "curves.png")


def plot_scalars(
    workdir: str | pathlib.Path,
    panels: dict[str, Callable[[dict], float]],
    *,
    kind: str = "epoch_start",
    name: str,
) -> pathlib.Path:
    """One panel per entry of ``panels`` (y-axis label -> the value of a record) over the
    epochs of the ``kind`` records that have every value (hooks' records), as ``workdir/name``.
    A training method plots what its hooks record with it."""
    from matplotlib.figure import Figure

    records = read_metrics(pathlib.Path(workdir) / "metrics.jsonl")
    points = []
    for record in records:
        if record["kind"] == kind:
            try:
                points.append((record["epoch"], [value(record) for value in panels.values()]))
            except (KeyError, ValueError):
                continue
    if not points:
        raise ValueError(f"{workdir} has no {kind!r} records with {sorted(panels)}")
    figure = Figure(figsize=(5 * len(panels), 4))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for i, (axis, label) in enumerate(zip(axes, panels, strict=True)):
        axis.plot([epoch for epoch, _ in points], [values[i] for _, values in points], marker=".")
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
    return save_figure(figure, workdir, name)
