"""Event-camera data sets through tonic: events binned into T frames ``(T, H, W, P)`` float32.

Every event set reads records ``(events, label)``: ``events`` a tonic-style structured array
with fields ``x, y, t, p`` (any order; ``t`` in microseconds, sorted or not), ``label`` an int.
The source is injectable (``source=`` for CIFAR10-DVS, ``train_source=``/``test_source=`` for
the others): any sequence of such records. Without one, the tonic data set is opened under
``data_dir`` (default ``~/tonic_data``); with ``download=False`` (the default) a missing data set
raises :class:`~jsnn.data.base.DatasetNotPreparedError` instead of downloading gigabytes.

| name        | tonic class | split                              | sensor (W, H, P) | frames  |
|-------------|-------------|------------------------------------|------------------|---------|
| cifar10_dvs | CIFAR10DVS  | 9k/1k, stratified by class, seed 0 | (128, 128, 2)    | 48x48   |
| nmnist      | NMNIST      | tonic's train/test                 | (34, 34, 2)      | 34x34   |
| dvs_gesture | DVSGesture  | tonic's train/test                 | (128, 128, 2)    | 128x128 |

Frames come from ``tonic.transforms.ToFrame(sensor_size, n_time_bins=T)`` (event counts per
pixel, polarity and time bin; tonic may drop an event at a bin edge), transposed from tonic's
``(T, P, H, W)`` to ``(T, H, W, P)``. CIFAR10-DVS follows Dspike Sec. 5.2: frames resized to
48x48 by area averaging (each output pixel is the mean of the input area it covers: an
anti-aliased resize that keeps a constant frame constant), and in training a random horizontal
flip and a random roll (with wrap-around) of up to 5 pixels along each image axis, as in the
authors' related code (TET, Deng et al. 2022).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jsnn._checks import positive_int
from jsnn.data.base import Dataset, DatasetNotPreparedError, Example

__all__ = [
    "EVENT_SETS",
    "EventFrames",
    "EventSet",
    "event_dataset",
    "events_to_frames",
    "resize_frames",
    "stratified_split",
]


@dataclasses.dataclass(frozen=True)
class EventSet:
    """What jsnn needs to know about one event data set."""

    tonic_class: str
    num_classes: int
    sensor_size: tuple[int, int, int]  # tonic order: (W, H, P)
    default_steps: int
    size: tuple[int, int] | None = None  # frames resized to (H, W); None keeps the sensor's
    max_roll: int = 0  # training augmentation: flip + roll by up to max_roll pixels
    split_test_fraction: float | None = None  # None: the data set has a train/test split


EVENT_SETS: dict[str, EventSet] = {
    "cifar10_dvs": EventSet(
        "CIFAR10DVS", 10, (128, 128, 2), 10, size=(48, 48), max_roll=5, split_test_fraction=0.1
    ),
    "nmnist": EventSet("NMNIST", 10, (34, 34, 2), 10),
    "dvs_gesture": EventSet("DVSGesture", 11, (128, 128, 2), 16),
}


def events_to_frames(
    events: np.ndarray, sensor_size: tuple[int, int, int], steps: int
) -> np.ndarray:
    """Bin events into ``steps`` frames of event counts, float32 ``(T, H, W, P)``.

    Uses ``tonic.transforms.ToFrame(sensor_size, n_time_bins=steps)``; ``sensor_size`` is
    tonic's ``(W, H, P)``. An empty stream gives zero frames.
    """
    from tonic.transforms import ToFrame

    width, height, polarities = sensor_size
    if len(events) == 0:
        return np.zeros((steps, height, width, polarities), np.float32)
    if np.any(np.diff(events["t"].astype(np.int64)) < 0):
        events = np.sort(events, order="t", kind="stable")
    frames = ToFrame(sensor_size=tuple(sensor_size), n_time_bins=steps)(events)
    return np.ascontiguousarray(frames.transpose(0, 2, 3, 1), dtype=np.float32)


def _area_resize_last_axis(x: np.ndarray, size: int) -> np.ndarray:
    """Area-average resize along the last axis: output pixel i is the mean of ``x`` over the
    input interval ``[i, i + 1) * n / size``, partial pixels weighted by their overlap. Computed
    exactly as differences of the running sum interpolated at the interval edges."""
    n = x.shape[-1]
    edges = np.arange(size + 1) * (n / size)
    low = np.minimum(np.floor(edges).astype(np.int64), n - 1)
    running = np.concatenate([np.zeros((*x.shape[:-1], 1)), np.cumsum(x, axis=-1)], axis=-1)
    integral = running[..., low] + (edges - low) * x[..., low]
    return np.diff(integral, axis=-1) * (size / n)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average resize of ``(T, H, W, P)`` frames to ``(T, *size, P)`` (like OpenCV's
    ``INTER_AREA``): a constant frame stays constant, the total scales by the area ratio."""
    columns = _area_resize_last_axis(frames.transpose(0, 1, 3, 2), size[1])  # (T, H, P, W')
    rows = _area_resize_last_axis(columns.transpose(0, 3, 2, 1), size[0])  # (T, W', P, H')
    return np.ascontiguousarray(rows.transpose(0, 3, 1, 2), dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class EventFrames:
    """Record ``(events, label)`` -> ``{"image": float32 (T, H, W, P), "label": int32}``.

    ``test`` bins (and resizes); ``train`` adds, when ``max_roll > 0``, a random horizontal flip
    (probability 1/2) and a random roll of ``-max_roll .. max_roll`` pixels along H and W.
    """

    sensor_size: tuple[int, int, int]
    steps: int
    size: tuple[int, int] | None = None
    max_roll: int = 0

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        width, height, polarities = self.sensor_size
        return (self.steps, *(self.size or (height, width)), polarities)

    def test(self, record: tuple[np.ndarray, Any]) -> Example:
        events, label = record
        frames = events_to_frames(events, self.sensor_size, self.steps)
        if self.size is not None:
            frames = resize_frames(frames, self.size)
        return {"image": frames, "label": np.int32(label)}

    def train(self, record: tuple[np.ndarray, Any], rng: np.random.Generator) -> Example:
        example = self.test(record)
        if self.max_roll:
            flip = rng.random() < 0.5
            shifts = rng.integers(-self.max_roll, self.max_roll + 1, size=2)
            frames = example["image"][:, :, ::-1] if flip else example["image"]
            example["image"] = np.roll(frames, tuple(int(s) for s in shifts), axis=(1, 2))
        return example


def stratified_split(
    labels: Sequence[int] | np.ndarray, test_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices: within each class a seeded permutation, of which the first
    ``round(test_fraction * class size)`` go to the test set (900/100 per CIFAR10-DVS class)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = round(test_fraction * len(members))
        test.append(members[:cut])
        train.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@dataclasses.dataclass(frozen=True)
class Subset:
    """The records of ``source`` at ``indices``, in that order."""

    source: Sequence[Any]
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.source[int(self.indices[index])]


def _labels(source: Sequence[Any]) -> np.ndarray:
    """Labels of a source: its ``targets`` attribute (tonic data sets) or read record by record."""
    targets = getattr(source, "targets", None)
    if targets is None:
        targets = [source[i][1] for i in range(len(source))]
    return np.asarray(targets, dtype=np.int64)


def _tonic_source(name: str, spec: EventSet, data_dir: str | None, download: bool, **kwargs):
    """Opens the real tonic data set; refuses to download unless ``download`` is true."""
    try:
        import tonic.datasets
    except ImportError:
        raise ImportError(f'{name} needs tonic: pip install -e ".[events]"') from None
    if spec.tonic_class == "CIFAR10DVS":
        try:
            import aedat  # noqa: F401  (tonic reads CIFAR10-DVS's .aedat4 files with it)
        except ImportError:
            raise ImportError(
                "reading CIFAR10-DVS needs the aedat package, which tonic does not declare: "
                "pip install aedat"
            ) from None
    cls = getattr(tonic.datasets, spec.tonic_class)
    root = os.path.expanduser(os.fspath(data_dir) if data_dir is not None else "~/tonic_data")
    if download:
        return cls(save_to=root, **kwargs)

    class _Missing(Exception):
        pass

    def refuse(self):
        raise _Missing(self.location_on_system)

    # tonic downloads from __init__ when files are missing; a same-named subclass (tonic puts
    # the files under the class name) turns that download into an error we can explain.
    guarded = type(cls.__name__, (cls,), {"download": refuse})
    try:
        dataset = guarded(save_to=root, **kwargs)
    except _Missing as missing:
        raise DatasetNotPreparedError(
            f"{name} ({spec.tonic_class}) is not in {missing.args[0]!r}. Pass download=True to "
            f"let tonic download it there (network needed), or put tonic's files there; "
            f"data_dir={root!r} is the folder that holds the {spec.tonic_class} folder."
        ) from None
    dataset.__class__ = cls  # back to the importable class, so the source pickles
    return dataset


def event_dataset(
    name: str,
    *,
    data_dir: str | None = None,
    steps: int | None = None,
    augment: bool | None = None,
    size: tuple[int, int] | None = None,
    source: Sequence[Any] | None = None,
    train_source: Sequence[Any] | None = None,
    test_source: Sequence[Any] | None = None,
    download: bool = False,
) -> Dataset:
    """An event set (see the module table) as a :class:`Dataset` of ``(T, H, W, P)`` frames.

    Args:
      name: ``cifar10_dvs``, ``nmnist`` or ``dvs_gesture``.
      data_dir: folder for tonic's files (default ``~/tonic_data``); unused with sources.
      steps: number of frames T (default 10, 10, 16).
      augment: flip + roll for CIFAR10-DVS (default True there); an error elsewhere.
      size: frame size (H, W) after area resizing (default 48x48 for CIFAR10-DVS, else the
        sensor's).
      source: CIFAR10-DVS records, split here 9k/1k stratified by class with seed 0.
      train_source, test_source: records of the data sets that come split.
      download: let tonic download a missing data set.
    """
    spec = EVENT_SETS[name]
    steps = positive_int("steps", spec.default_steps if steps is None else steps)
    if augment is None:
        augment = bool(spec.max_roll)
    if augment and not spec.max_roll:
        raise ValueError(f"augment=True: no training augmentation is defined for {name}")
    size = spec.size if size is None else size
    if size is not None:
        if not isinstance(size, tuple | list) or len(size) != 2:
            raise ValueError(f"size must be (height, width), got {size!r}")
        size = (positive_int("size[0]", size[0]), positive_int("size[1]", size[1]))
    if spec.split_test_fraction is not None:
        if train_source is not None or test_source is not None:
            raise ValueError(
                f"{name} has no train/test split of its own: pass source=, not "
                "train_source=/test_source="
            )
        if source is None:
            source = _tonic_source(name, spec, data_dir, download)
        train_idx, test_idx = stratified_split(_labels(source), spec.split_test_fraction)
        train_source, test_source = Subset(source, train_idx), Subset(source, test_idx)
    else:
        if source is not None:
            raise ValueError(f"{name} comes split: pass train_source= and test_source=")
        if (train_source is None) != (test_source is None):
            raise ValueError("pass both train_source= and test_source=, or neither")
        if train_source is None:
            train_source = _tonic_source(name, spec, data_dir, download, train=True)
            test_source = _tonic_source(name, spec, data_dir, download, train=False)
    frames = EventFrames(spec.sensor_size, steps, size, spec.max_roll if augment else 0)
    return Dataset(
        name=name,
        num_classes=spec.num_classes,
        input_shape=frames.input_shape,
        train_source=train_source,
        test_source=test_source,
        train_transform=frames.train,
        test_transform=frames.test,
    )
