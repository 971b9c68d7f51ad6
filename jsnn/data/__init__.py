"""Data sets for jsnn: grain pipelines of static images or event frames.

``get(name, data_dir=..., **options)`` returns a :class:`Dataset` whose ``train`` method gives
step-indexed training batches and whose ``test`` method gives padded, masked test batches,
both sharded over processes. The pipelines deliver what the model consumes:

* static images ``[H, W, C]`` float32 (the model encodes them over time, e.g. with
  :func:`jsnn.encoding.direct`): CIFAR and ImageNet normalised per channel (mean/std),
  MNIST, Fashion-MNIST and the digits in [0, 1];
* event frames ``[T, H, W, P]`` float32 event counts per time bin, pixel and polarity.

| name          | source                                    | example shape    | extra      |
|---------------|-------------------------------------------|------------------|------------|
| digits        | scikit-learn's bundled 8x8 digits         | (8, 8, 1)        | (none)     |
| digits_events | the digits seen in saccades by a simulated| (T, 12, 12, 2)   | ``events`` |
|               | event camera (embedded, offline)          |                  |            |
| cifar10       | tfds                                      | (32, 32, 3)      | ``tfds``   |
| cifar100      | tfds                                      | (32, 32, 3)      | ``tfds``   |
| mnist         | tfds                                      | (28, 28, 1)      | ``tfds``   |
| fashion_mnist | tfds                                      | (28, 28, 1)      | ``tfds``   |
| imagenet      | tfds ``imagenet2012`` (manual download)   | (224, 224, 3)    | ``tfds``   |
| cifar10_dvs   | tonic (needs ``aedat`` too)               | (T, 48, 48, 2)   | ``events`` |
| nmnist        | tonic                                     | (T, 34, 34, 2)   | ``events`` |
| dvs_gesture   | tonic                                     | (T, 128, 128, 2) | ``events`` |

Options per family: :func:`jsnn.data.images.image_dataset`,
:func:`jsnn.data.events.event_dataset`, :func:`jsnn.data.saccades.digits_events_dataset`,
:func:`jsnn.data.digits.digits_dataset`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from jsnn.data.base import Dataset, DatasetNotPreparedError
from jsnn.data.digits import digits_dataset, load_digits
from jsnn.data.events import EVENT_SETS, event_dataset
from jsnn.data.images import IMAGE_SETS, image_dataset
from jsnn.data.saccades import digits_events_dataset

__all__ = [
    "EVENT_SETS",
    "IMAGE_SETS",
    "Dataset",
    "DatasetNotPreparedError",
    "get",
    "load_digits",
    "names",
]

_FACTORIES: dict[str, Callable[..., Dataset]] = {
    "digits": digits_dataset,
    "digits_events": digits_events_dataset,
    **{name: functools.partial(image_dataset, name) for name in IMAGE_SETS},
    **{name: functools.partial(event_dataset, name) for name in EVENT_SETS},
}


def names() -> tuple[str, ...]:
    """The names :func:`get` accepts."""
    return tuple(_FACTORIES)


def get(name: str, *, data_dir: str | None = None, **options: Any) -> Dataset:
    """The data set ``name`` (see :func:`names`), with per-family ``options``, e.g. ``steps``
    (frames T of event sets), ``augment``, ``autoaugment``, ``cutout``, ``download``, or an
    injected event ``source``. Unknown names and options raise ``ValueError``."""
    if name not in _FACTORIES:
        raise ValueError(f"name must be one of {names()}, got {name!r}")
    factory = _FACTORIES[name]
    accepted = sorted(set(inspect.signature(factory).parameters) - {"data_dir"})
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {name!r}; accepted: {accepted}")
    return factory(data_dir=data_dir, **options)
