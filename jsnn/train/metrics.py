"""Metrics a person can plot: JSON lines, TensorBoard, and lines on the console."""

from __future__ import annotations

import json
import pathlib

__all__ = ["MetricWriter", "plot_curves", "plot_temperature", "read_metrics"]


class MetricWriter:
    """Appends ``{"step": ..., "kind": "train" | "eval", ...}`` records to ``metrics.jsonl`` and
    the same scalars to TensorBoard under ``workdir/tensorboard``. Only one process writes."""

    def __init__(self, workdir: str | pathlib.Path, *, enabled: bool, tensorboard: bool):
        self.path = pathlib.Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self._board = None
        if enabled and tensorboard:
            from tensorboardX import SummaryWriter

            self._board = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))

    def drop_after(self, step: int) -> None:
        """On resume: forget the records the run will write again: those past the restored
        step, and the epoch-start records at it (a state saved at an epoch's end comes
        before the next epoch's start hooks)."""
        if not (self.enabled and self.path.exists()):
            return
        records = [json.loads(line) for line in self.path.read_text().splitlines()]
        kept = [
            json.dumps(record)
            for record in records
            if record["step"] < step or (record["step"] == step and record["kind"] != "epoch_start")
        ]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, kind: str, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "kind": kind, **scalars}
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        if self._board is not None:
            for name, value in scalars.items():
                self._board.add_scalar(f"{kind}/{name}", value, step)
            self._board.flush()

    def close(self) -> None:
        if self._board is not None:
            self._board.close()


def read_metrics(path: str | pathlib.Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file."""
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


def plot_curves(workdir: str | pathlib.Path) -> pathlib.Path:
    """Loss and accuracy curves (train per log interval, test per epoch) as ``curves.png``."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot as plt

    records = read_metrics(pathlib.Path(workdir) / "metrics.jsonl")
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
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
    figure.tight_layout()
    path = pathlib.Path(workdir) / "curves.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_temperature(workdir: str | pathlib.Path) -> pathlib.Path:
    """The Dspike temperature ``b`` chosen before each epoch (the Dspike paper's Fig. 5) and the
    chosen candidate's cosine similarity with the FDG, as ``temperature.png``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    records = read_metrics(pathlib.Path(workdir) / "metrics.jsonl")
    points = [r for r in records if r["kind"] == "epoch_start" and "dspike_b" in r]
    if not points:
        raise ValueError(f"{workdir} has no temperature search records (method='dspike')")
    epochs = [r["epoch"] for r in points]
    cosines = [max(v for k, v in r.items() if k.startswith("cosine_b")) for r in points]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(epochs, [r["dspike_b"] for r in points], marker=".")
    axes[0].set_ylabel("temperature b")
    axes[1].plot(epochs, cosines, marker=".")
    axes[1].set_ylabel("cosine similarity with the FDG")
    for axis in axes:
        axis.set_xlabel("epoch")
    figure.tight_layout()
    path = pathlib.Path(workdir) / "temperature.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
