"""An embedded event set: the bundled digits recorded by a simulated event camera in saccades.

N-MNIST (Orchard et al. 2015, "Converting static image datasets to spiking neuromorphic
datasets using saccades", Front. Neurosci. 9:437) was recorded by moving an ATIS event camera
in front of each MNIST digit in three 100 ms saccades along the sides of a triangle. Here the
camera stands still and the 8x8 digit moves the same way on a small sensor; each pixel emits an
event whenever its log intensity has changed by more than a contrast threshold since its last
event (the DVS pixel model of Lichtsteiner, Posch & Delbruck 2008, "A 128x128 120 dB 15 us
latency asynchronous temporal contrast vision sensor"), ON (p=1) for brightening, OFF (p=0)
for darkening. The result is tonic-style structured events ``(x, y, t, p)`` with a sensor
size, binned into frames by the same ``ToFrame`` path as the real event sets.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jsnn._checks import positive_int
from jsnn.data.base import Dataset
from jsnn.data.digits import load_digits
from jsnn.data.events import EventFrames

__all__ = [
    "EVENT_DTYPE",
    "SaccadeCamera",
    "SaccadeRecordings",
    "digits_events_dataset",
    "simulate_event_camera",
]

EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])


def simulate_event_camera(
    video: np.ndarray, times: np.ndarray, *, threshold: float = 0.2, offset: float = 0.1
) -> np.ndarray:
    """Events of an ideal DVS watching ``video`` (``[K, H, W]`` intensities >= 0 at ``times``).

    Each pixel keeps the log intensity ``log(I + offset)`` of its last event (initially of the
    first frame; ``offset`` keeps black pixels finite, like a sensor's dark current). Between
    frames the log intensity is taken to change linearly; every time it moves ``threshold``
    away from the stored level the pixel emits one event at the interpolated crossing time and
    the level moves by ``threshold``. Returns events sorted by ``t`` (then by pixel), dtype
    :data:`EVENT_DTYPE`, ``t`` rounded to whole units of ``times``.
    """
    video = np.asarray(video, np.float64)
    times = np.asarray(times, np.float64)
    if video.ndim != 3 or len(times) != len(video):
        raise ValueError(
            f"video must be [K, H, W] with one time per frame, got {video.shape} and "
            f"{len(times)} times"
        )
    if threshold <= 0 or offset <= 0:
        raise ValueError(f"threshold and offset must be > 0, got {threshold} and {offset}")
    log = np.log(video + offset)
    level = log[0].copy()
    fields = {name: [np.empty(0)] for name in EVENT_DTYPE.names}
    for k in range(1, len(log)):
        change = log[k] - level
        counts = np.floor(np.abs(change) / threshold).astype(np.int64)
        ys, xs = np.nonzero(counts)
        n, sign = counts[ys, xs], np.sign(change[ys, xs])
        # The i-th crossing (i = 1..n) of each pixel, at the time log intensity reaches it.
        pixel = np.repeat(np.arange(len(n)), n)
        crossing = np.arange(len(pixel)) - np.repeat(np.cumsum(n) - n, n) + 1
        target = level[ys, xs][pixel] + sign[pixel] * crossing * threshold
        start, stop = log[k - 1, ys, xs][pixel], log[k, ys, xs][pixel]
        fraction = np.clip((target - start) / (stop - start), 0, 1)
        fields["t"].append(times[k - 1] + fraction * (times[k] - times[k - 1]))
        fields["x"].append(xs[pixel])
        fields["y"].append(ys[pixel])
        fields["p"].append(sign[pixel] > 0)
        level[ys, xs] += sign * n * threshold
    events = np.empty(sum(len(t) for t in fields["t"]), EVENT_DTYPE)
    for name, chunks in fields.items():
        events[name] = np.round(np.concatenate(chunks)) if name == "t" else np.concatenate(chunks)
    return events[np.argsort(events["t"], kind="stable")]


def _shift_weights(size_out: int, size_in: int, pad: int, shifts: np.ndarray) -> np.ndarray:
    """``[K, size_out, size_in + 2]`` bilinear weights that place a zero-bordered line of
    ``size_in`` pixels at ``pad + shifts[k]`` on a line of ``size_out`` pixels."""
    coords = np.arange(size_out)[None, :] - pad - shifts[:, None] + 1  # in the bordered line
    low = np.floor(coords)
    frac = coords - low
    k, o = np.indices(coords.shape)
    weights = np.zeros((*coords.shape, size_in + 2))
    # Coordinates beyond the line land on its zero border, so they contribute nothing.
    np.add.at(weights, (k, o, np.clip(low, 0, size_in + 1).astype(int)), 1 - frac)
    np.add.at(weights, (k, o, np.clip(low + 1, 0, size_in + 1).astype(int)), frac)
    return weights


@dataclasses.dataclass(frozen=True)
class SaccadeCamera:
    """Moves an image in three saccades in front of a simulated event camera.

    The image sits centred on a sensor ``pad`` pixels larger on each side and travels along the
    triangle with corners ``(-a, a), (a, a), (0, -a)`` (x, y in pixels, ``a = amplitude``), one
    side per saccade of ``saccade_us`` microseconds, sampled ``samples`` times per saccade with
    bilinear sub-pixel shifts (zero outside the image).
    """

    pad: int = 2
    amplitude: float = 1.5
    saccade_us: int = 100_000
    samples: int = 12
    threshold: float = 0.2
    offset: float = 0.1

    def __post_init__(self):
        if not 0 < self.amplitude <= self.pad:
            raise ValueError(
                f"amplitude must lie in (0, pad={self.pad}] so the image stays on the sensor, "
                f"got {self.amplitude}"
            )

    def sensor_size(self, image_shape: tuple[int, int]) -> tuple[int, int, int]:
        """tonic's ``(W, H, P)`` for an image of ``(H, W)``."""
        return (image_shape[1] + 2 * self.pad, image_shape[0] + 2 * self.pad, 2)

    def path(self) -> tuple[np.ndarray, np.ndarray]:
        """Sample times (us) and ``(x, y)`` offsets of the image, ``3 * samples + 1`` of each."""
        a = self.amplitude
        corners = np.array([(-a, a), (a, a), (0.0, -a), (-a, a)])
        steps = np.linspace(0, 1, self.samples, endpoint=False)[:, None]
        offsets = [corners[s] + steps * (corners[s + 1] - corners[s]) for s in range(3)]
        offsets = np.concatenate([*offsets, corners[3:]])
        times = np.arange(len(offsets)) * (self.saccade_us / self.samples)
        return times, offsets

    def record(self, image: np.ndarray) -> np.ndarray:
        """Events of one ``[H, W]`` (or ``[H, W, 1]``) image with intensities in [0, 1]."""
        image = np.asarray(image, np.float64)
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        if image.ndim != 2:
            raise ValueError(f"image must be [H, W] or [H, W, 1], got shape {image.shape}")
        height, width = image.shape
        times, offsets = self.path()
        rows = _shift_weights(height + 2 * self.pad, height, self.pad, offsets[:, 1])
        cols = _shift_weights(width + 2 * self.pad, width, self.pad, offsets[:, 0])
        video = rows @ np.pad(image, 1) @ cols.transpose(0, 2, 1)
        return simulate_event_camera(video, times, threshold=self.threshold, offset=self.offset)


@dataclasses.dataclass(frozen=True)
class SaccadeRecordings:
    """A random-access source of ``(events, label)``: ``images[i]`` recorded on access."""

    images: np.ndarray
    labels: np.ndarray
    camera: SaccadeCamera

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int32]:
        return self.camera.record(self.images[index]), self.labels[index]


def digits_events_dataset(
    *,
    data_dir: str | None = None,
    steps: int = 6,
    augment: bool = False,
    camera: SaccadeCamera | None = None,
) -> Dataset:
    """The bundled digits as an event set: 1437 train / 360 test recordings (the split of
    :func:`~jsnn.data.digits.load_digits`), frames ``(steps, 12, 12, 2)`` with the default
    camera. Events are simulated on access (a few milliseconds per digit); deterministic.

    ``data_dir`` is ignored (everything is generated from data bundled with scikit-learn).
    """
    del data_dir
    steps = positive_int("steps", steps)
    if augment:
        raise ValueError("augment=True: no training augmentation is defined for digits_events")
    camera = SaccadeCamera() if camera is None else camera
    data = load_digits()
    frames = EventFrames(camera.sensor_size(data["train_images"].shape[1:3]), steps)
    return Dataset(
        name="digits_events",
        num_classes=10,
        input_shape=frames.input_shape,
        train_source=SaccadeRecordings(data["train_images"], data["train_labels"], camera),
        test_source=SaccadeRecordings(data["test_images"], data["test_labels"], camera),
        train_transform=frames.train,
        test_transform=frames.test,
    )
