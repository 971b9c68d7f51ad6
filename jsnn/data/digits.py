"""scikit-learn's bundled digits: 1797 real 8x8 handwritten digits, no network needed."""

from __future__ import annotations

import numpy as np
import sklearn.datasets
import sklearn.model_selection

__all__ = ["load_digits"]


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> dict[str, np.ndarray]:
    """A fixed stratified train/test split of the digits.

    Returns ``train_images``/``test_images`` as float32 ``[N, 8, 8, 1]`` in [0, 1] (the raw
    pixels are 0..16) and ``train_labels``/``test_labels`` as int32 class indices 0..9.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    digits = sklearn.datasets.load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    train_images, test_images, train_labels, test_labels = sklearn.model_selection.train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }
