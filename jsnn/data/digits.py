"""scikit-learn's bundled digits: 1797 real 8x8 handwritten digits, no network needed."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import sklearn.datasets
import sklearn.model_selection

from jsnn.data.base import Dataset, Example

__all__ = ["digits_dataset", "load_digits", "split_indices"]


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """All digits as read-only float32 ``[1797, 8, 8, 1]`` in [0, 1] and int32 labels."""
    digits = sklearn.datasets.load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def split_indices(test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a fixed stratified train/test split of the 1797 digits (scikit-learn's
    ``train_test_split`` with ``stratify``)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    labels = _digits()[1]
    train, test = sklearn.model_selection.train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed
    )
    return train, test


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> dict[str, np.ndarray]:
    """A fixed stratified train/test split of the digits.

    Returns ``train_images``/``test_images`` as float32 ``[N, 8, 8, 1]`` in [0, 1] (the raw
    pixels are 0..16) and ``train_labels``/``test_labels`` as int32 class indices 0..9.
    """
    train, test = split_indices(test_fraction, seed)
    images, labels = _digits()
    return {
        "train_images": images[train],
        "train_labels": labels[train],
        "test_images": images[test],
        "test_labels": labels[test],
    }


@dataclasses.dataclass(frozen=True)
class ArrayPairs:
    """A random-access source of ``(inputs[i], labels[i])`` records."""

    inputs: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.inputs[index], self.labels[index]


def _example(record: tuple[np.ndarray, np.ndarray]) -> Example:
    image, label = record
    return {"image": np.asarray(image, np.float32), "label": np.int32(label)}


def _train_example(record: tuple[np.ndarray, np.ndarray], rng: np.random.Generator) -> Example:
    del rng  # no augmentation for the digits
    return _example(record)


def digits_dataset(*, data_dir: str | None = None, augment: bool = False) -> Dataset:
    """The bundled digits as a :class:`Dataset`: 1437 train / 360 test (the split of
    :func:`load_digits`), images ``(8, 8, 1)`` in [0, 1], no augmentation.

    ``data_dir`` is ignored (the data ship with scikit-learn).
    """
    del data_dir
    if augment:
        raise ValueError("augment=True: no training augmentation is defined for digits")
    data = load_digits()
    return Dataset(
        name="digits",
        num_classes=10,
        input_shape=(8, 8, 1),
        train_source=ArrayPairs(data["train_images"], data["train_labels"]),
        test_source=ArrayPairs(data["test_images"], data["test_labels"]),
        train_transform=_train_example,
        test_transform=_example,
    )
