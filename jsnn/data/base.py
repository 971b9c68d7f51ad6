"""The data-set interface the trainer uses: step-indexed training batches, padded test batches.

A :class:`Dataset` holds two random-access sources (any ``Sequence`` of records: a tfds
``ArrayRecordDataSource``, a tonic data set, a list) and two per-record transforms that turn a
record into an example ``{"image": float32[*input_shape], "label": int32}``. Its ``train`` and
``test`` methods build grain ``MapDataset`` pipelines from them; nothing here imports TensorFlow.

Sharding over processes: the global batch of step ``i`` holds the examples at positions
``i * batch_size ... (i + 1) * batch_size - 1`` of the epoch's shuffled stream; process ``h`` of
``P`` gets the contiguous block ``h * local ... (h + 1) * local - 1`` of it
(``local = batch_size // P``), so concatenating the local batches in process order gives exactly
the single-process global batch. Random augmentations draw from grain's per-index generator,
seeded by ``seed`` and the position in the stream, so they do not depend on the process layout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from jsnn._checks import positive_int

if TYPE_CHECKING:
    import grain

__all__ = ["Dataset", "DatasetNotPreparedError", "Example"]

Example = dict[str, np.ndarray]


class DatasetNotPreparedError(RuntimeError):
    """A data set is not on disk and was not downloaded; the message says how to prepare it."""


def _check_processes(batch_size: Any, process_index: Any, process_count: Any) -> int:
    """Validates the sharding arguments and returns the local (per-process) batch size."""
    batch_size = positive_int("batch_size", batch_size)
    process_count = positive_int("process_count", process_count)
    if (
        isinstance(process_index, bool)
        or not isinstance(process_index, int | np.integer)
        or not 0 <= process_index < process_count
    ):
        raise ValueError(
            f"process_index must be an integer in [0, process_count={process_count}), "
            f"got {process_index!r}"
        )
    if batch_size % process_count:
        raise ValueError(
            f"batch_size (the global batch) must be divisible by process_count, got "
            f"batch_size={batch_size} and process_count={process_count}"
        )
    return batch_size // process_count


@dataclasses.dataclass(frozen=True)
class _WithMask:
    """Test transform plus ``mask = 1``: a real example, not padding."""

    transform: Callable[[Any], Example]

    def __call__(self, record: Any) -> Example:
        return {**self.transform(record), "mask": np.float32(1.0)}


@dataclasses.dataclass(frozen=True)
class _Padding:
    """A zero example with ``mask = 0`` that fills the last test batch."""

    input_shape: tuple[int, ...]

    def __call__(self, _: int) -> Example:
        return {
            "image": np.zeros(self.input_shape, np.float32),
            "label": np.int32(0),
            "mask": np.float32(0.0),
        }


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A classification data set with grain pipelines for training and evaluation.

    Build one with :func:`jsnn.data.get`; construct it directly to wrap your own sources.

    Attributes:
      name: registry name, e.g. ``"cifar10"``.
      num_classes: number of classes; labels are ``0 .. num_classes - 1``.
      input_shape: shape of one example: ``(H, W, C)`` for static images (the model encodes
        them over time), ``(T, H, W, P)`` for event frames.
      train_source, test_source: random-access sequences of records (``len`` and ``[i]``).
      train_transform: ``(record, rng) -> {"image", "label"}``; ``rng`` is the
        ``np.random.Generator`` grain seeds from ``seed`` and the example's stream position.
      test_transform: ``record -> {"image", "label"}``, deterministic.
      num_train, num_test: lengths of the sources (set from them).

    Examples are ``{"image": float32[*input_shape], "label": int32}``; batches stack them.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    train_source: Sequence[Any] = dataclasses.field(repr=False, compare=False)
    test_source: Sequence[Any] = dataclasses.field(repr=False, compare=False)
    train_transform: Callable[[Any, np.random.Generator], Example] = dataclasses.field(
        repr=False, compare=False
    )
    test_transform: Callable[[Any], Example] = dataclasses.field(repr=False, compare=False)
    num_train: int = dataclasses.field(init=False)
    num_test: int = dataclasses.field(init=False)

    def __post_init__(self):
        positive_int("num_classes", self.num_classes)
        shape = tuple(self.input_shape)
        if not shape or any(
            isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 1 for d in shape
        ):
            raise ValueError(f"input_shape must be a tuple of positive ints, got {shape!r}")
        object.__setattr__(self, "input_shape", tuple(int(d) for d in shape))
        for split in ("train", "test"):
            if len(getattr(self, f"{split}_source")) == 0:
                raise ValueError(f"{self.name}: the {split} source is empty")
        object.__setattr__(self, "num_train", len(self.train_source))
        object.__setattr__(self, "num_test", len(self.test_source))

    def steps_per_epoch(self, batch_size: int) -> int:
        """Training steps per epoch, ``num_train // batch_size`` (the remainder is dropped)."""
        batch_size = positive_int("batch_size", batch_size)
        if batch_size > self.num_train:
            raise ValueError(
                f"batch_size must be at most num_train={self.num_train} of {self.name}, "
                f"got {batch_size}"
            )
        return self.num_train // batch_size

    def train(
        self, *, batch_size: int, seed: int, process_index: int = 0, process_count: int = 1
    ) -> grain.MapDataset:
        """Step-indexed, endless training batches for this process.

        Element ``i`` is the local batch of global step ``i``: epoch ``e = i // steps_per_epoch``
        is a fresh permutation of the training set drawn from ``(seed, e)``, cut into
        ``steps_per_epoch`` global batches of ``batch_size`` (the last ``num_train % batch_size``
        examples of each permutation are dropped), and this process gets its contiguous
        ``batch_size // process_count`` slice of each. ``seed`` is an integer in [0, 2**32).
        Resume by indexing at the saved step; to prefetch with threads, iterate
        ``train(...)[step:].to_iter_dataset(grain.ReadOptions(num_threads=..., ...))``.

        Returns dicts ``{"image": float32[local_batch, *input_shape], "label": int32[local]}``.
        """
        import grain

        local_batch = _check_processes(batch_size, process_index, process_count)
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
        examples_per_epoch = self.steps_per_epoch(batch_size) * batch_size
        # Shuffle, then repeat: grain folds the epoch into the shuffle seed, and random_map seeds
        # each example's generator with its position in the endless stream.
        stream = grain.MapDataset.source(self.train_source).seed(int(seed)).shuffle()
        stream = stream[:examples_per_epoch].repeat().random_map(self.train_transform)
        return stream.batch(local_batch, drop_remainder=True)[process_index::process_count]

    def test(
        self, *, batch_size: int, process_index: int = 0, process_count: int = 1
    ) -> grain.MapDataset:
        """The whole test split once, in order, without augmentation, for this process.

        The split is padded with zero examples to a whole number of global batches, so every
        local batch has ``batch_size // process_count`` rows; ``mask`` (float32) is 1 for real
        examples and 0 for padding. Returns dicts ``{"image", "label", "mask"}``.
        """
        import grain

        local_batch = _check_processes(batch_size, process_index, process_count)
        num_batches = -(-self.num_test // batch_size)
        padding = num_batches * batch_size - self.num_test
        examples = grain.MapDataset.source(self.test_source).map(_WithMask(self.test_transform))
        if padding:
            filler = grain.MapDataset.range(padding).map(_Padding(self.input_shape))
            examples = grain.MapDataset.concatenate([examples, filler])
        return examples.batch(local_batch)[process_index::process_count]
