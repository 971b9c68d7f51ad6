"""Static image sets from tensorflow-datasets, read with ``tfds.data_source`` (no TensorFlow).

| name          | tfds name     | test split | shape         | pixels                     |
|---------------|---------------|------------|---------------|----------------------------|
| cifar10       | cifar10       | test       | (32, 32, 3)   | per-channel mean/std       |
| cifar100      | cifar100      | test       | (32, 32, 3)   | per-channel mean/std       |
| mnist         | mnist         | test       | (28, 28, 1)   | [0, 1]                     |
| fashion_mnist | fashion_mnist | test       | (28, 28, 1)   | [0, 1]                     |
| imagenet      | imagenet2012  | validation | (224, 224, 3) | per-channel mean/std       |

Training augmentation (``augment=True``, the default where one is defined): CIFAR pad-4 random
crop + horizontal flip, optionally AutoAugment's CIFAR-10 policy (``autoaugment=True``) and
Cutout (``cutout=True`` for 16 px, or a length), the Dspike Sec. 5.2 recipe; ImageNet random
resized crop to 224 + flip, tested on the central 224 crop of the image resized to 256; MNIST
and Fashion-MNIST have none. Reading needs the files prepared once in array_record format, which
needs TensorFlow (see :class:`~jsnn.data.base.DatasetNotPreparedError`'s message).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Sequence
from typing import Any

import numpy as np

from jsnn.data import augment as aug
from jsnn.data.base import Dataset, DatasetNotPreparedError, Example

__all__ = ["IMAGE_SETS", "ImageSet", "image_dataset", "tfds_source"]


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """What jsnn needs to know about one tfds image set."""

    tfds_name: str
    test_split: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...] | None = None  # None: pixels scaled to [0, 1] only
    std: tuple[float, ...] | None = None
    crop_padding: int = 0  # > 0: pad-and-crop + flip training augmentation
    resized_crops: bool = False  # variable-size images: random-resized / centre crops
    manual_download: bool = False  # the raw files must be downloaded by hand


# Per-channel statistics of the training sets (CIFAR), and the usual ImageNet ones.
IMAGE_SETS: dict[str, ImageSet] = {
    "cifar10": ImageSet(
        "cifar10",
        "test",
        10,
        (32, 32, 3),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        crop_padding=4,
    ),
    "cifar100": ImageSet(
        "cifar100",
        "test",
        100,
        (32, 32, 3),
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        crop_padding=4,
    ),
    "mnist": ImageSet("mnist", "test", 10, (28, 28, 1)),
    "fashion_mnist": ImageSet("fashion_mnist", "test", 10, (28, 28, 1)),
    "imagenet": ImageSet(
        "imagenet2012",
        "validation",
        1000,
        (224, 224, 3),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        resized_crops=True,
        manual_download=True,
    ),
}


def _prepare_message(spec: ImageSet, data_dir: str | None, reason: str) -> str:
    from tensorflow_datasets.core import constants

    where = data_dir or constants.get_default_data_dir()
    command = shlex.join(
        ["tfds", "build", spec.tfds_name, f"--data_dir={where}", "--file_format=array_record"]
    )
    manual = (
        " --manual_dir=DIR_WITH_THE_ILSVRC2012_TARS\n(ImageNet cannot be downloaded "
        "automatically: put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from "
        "image-net.org into that folder first)"
        if spec.manual_download
        else ""
    )
    return (
        f"The tfds data set {spec.tfds_name!r} is not prepared in array_record format in "
        f"data_dir={where!r}: {reason}.\n"
        f"jsnn reads it with tfds.data_source, which needs no TensorFlow, but preparing it once "
        f"does. On a machine with network access run:\n"
        f'    pip install -e ".[tfds]" tensorflow   # TensorFlow only for preparing\n'
        f"    {command}{manual}\n"
        f"Afterwards training reads the prepared files without TensorFlow."
    )


def tfds_source(
    spec: ImageSet, split: str, data_dir: str | None, download: bool = False
) -> Sequence[dict[str, Any]]:
    """``tfds.data_source`` for one split, or a :class:`DatasetNotPreparedError` that says how
    to prepare it. ``download=True`` lets tfds download and prepare (needs TensorFlow)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ImportError(
            f'{spec.tfds_name} needs tensorflow-datasets: pip install -e ".[tfds]"'
        ) from None
    data_dir = os.fspath(data_dir) if data_dir is not None else None
    kwargs = {"builder_kwargs": {"file_format": "array_record"}} if download else {}
    try:
        return tfds.data_source(
            spec.tfds_name,
            split=split,
            data_dir=data_dir,
            download=download,
            try_gcs=False,
            **kwargs,
        )
    except Exception as err:  # tfds raises many types here; all mean "not usable on disk"
        try:
            prepared = tfds.builder(spec.tfds_name, data_dir=data_dir).is_prepared()
        except Exception:
            prepared = False
        detail = str(err).strip().split("\n")[0]
        reason = (
            f"a prepared version is there, but tfds.data_source cannot read it "
            f"({type(err).__name__}: {detail})"
            if prepared
            else "no prepared files found"
        )
        raise DatasetNotPreparedError(_prepare_message(spec, data_dir, reason)) from None


@dataclasses.dataclass(frozen=True)
class _ImageTransforms:
    """Record ``{"image": uint8 [H, W, C], "label"}`` -> float32 example."""

    spec: ImageSet
    augment: bool
    autoaugment: bool
    cutout: int

    def _scale(self, image: np.ndarray) -> np.ndarray:
        image = image.astype(np.float32) / 255.0
        if self.spec.mean is not None:
            image = (image - np.float32(self.spec.mean)) / np.float32(self.spec.std)
        return image

    def test(self, record: dict[str, Any]) -> Example:
        image = np.asarray(record["image"])
        if self.spec.resized_crops:
            image = aug.center_crop(image, size=self.spec.input_shape[0])
        return {"image": self._scale(image), "label": np.int32(record["label"])}

    def train(self, record: dict[str, Any], rng: np.random.Generator) -> Example:
        image = np.asarray(record["image"])
        if self.spec.resized_crops:
            image = (
                aug.random_resized_crop(image, rng, size=self.spec.input_shape[0])
                if self.augment
                else aug.center_crop(image, size=self.spec.input_shape[0])
            )
        elif self.augment and self.spec.crop_padding:
            image = aug.random_crop_flip(image, rng, padding=self.spec.crop_padding)
        if self.autoaugment:
            image = aug.autoaugment(image, rng)
        image = self._scale(image)
        if self.cutout:
            image = aug.cutout(image, rng, length=self.cutout)
        return {"image": image, "label": np.int32(record["label"])}


def image_dataset(
    name: str,
    *,
    data_dir: str | None = None,
    augment: bool | None = None,
    autoaugment: bool = False,
    cutout: bool | int = False,
    download: bool = False,
) -> Dataset:
    """A tfds image set (see the module table) as a :class:`Dataset`.

    Args:
      name: ``cifar10``, ``cifar100``, ``mnist``, ``fashion_mnist`` or ``imagenet``.
      data_dir: the tfds data directory (default: tfds's, ``~/tensorflow_datasets`` or
        ``$TFDS_DATA_DIR``).
      augment: the standard training augmentation; default True where one is defined
        (CIFAR, ImageNet), and an error for MNIST and Fashion-MNIST.
      autoaugment: AutoAugment CIFAR-10 policy (CIFAR only).
      cutout: Cutout after normalisation; True for 16 px, or the patch length (CIFAR only).
      download: let tfds download and prepare the data (needs TensorFlow and network);
        with the default False a missing data set raises :class:`DatasetNotPreparedError`.
    """
    spec = IMAGE_SETS[name]
    has_augmentation = bool(spec.crop_padding) or spec.resized_crops
    if augment is None:
        augment = has_augmentation
    if augment and not has_augmentation:
        raise ValueError(f"augment=True: no training augmentation is defined for {name}")
    is_cifar = name.startswith("cifar")
    if autoaugment and not is_cifar:
        raise ValueError(f"autoaugment=True: the CIFAR-10 policy applies to CIFAR, not {name}")
    if isinstance(cutout, bool):
        cutout = 16 if cutout else 0
    if not isinstance(cutout, int | np.integer) or cutout < 0:
        raise ValueError(f"cutout must be a bool or a patch length >= 0, got {cutout!r}")
    if cutout and not is_cifar:
        raise ValueError(f"cutout={cutout}: Cutout is only set up for CIFAR, not {name}")
    transforms = _ImageTransforms(spec, bool(augment), bool(autoaugment), int(cutout))
    return Dataset(
        name=name,
        num_classes=spec.num_classes,
        input_shape=spec.input_shape,
        train_source=tfds_source(spec, "train", data_dir, download),
        test_source=tfds_source(spec, spec.test_split, data_dir, download),
        train_transform=transforms.train,
        test_transform=transforms.test,
    )
