"""Image augmentations in NumPy and Pillow, each drawing from an explicit ``np.random.Generator``.

Images are ``[H, W, C]`` arrays: ``uint8`` before normalisation (crop, flip, AutoAugment,
ImageNet crops), float after it (Cutout). Dspike (Li et al. 2021, Sec. 5.2) trains CIFAR with
AutoAugment and Cutout on top of the usual random crop and flip.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CIFAR10_POLICY",
    "autoaugment",
    "center_crop",
    "cutout",
    "random_crop_flip",
    "random_resized_crop",
]


def random_crop_flip(
    image: np.ndarray, rng: np.random.Generator, *, padding: int = 4, flip: bool = True
) -> np.ndarray:
    """Zero-pad by ``padding`` pixels, crop back to the original size at a uniformly random
    offset, and mirror left-right with probability 1/2.

    The standard CIFAR augmentation (He et al. 2016, "Deep residual learning for image
    recognition", Sec. 4.2; torchvision ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip``).
    """
    height, width = image.shape[:2]
    if padding:
        pads = ((padding, padding), (padding, padding)) + ((0, 0),) * (image.ndim - 2)
        top, left = rng.integers(0, 2 * padding + 1, size=2)
        image = np.pad(image, pads)[top : top + height, left : left + width]
    if flip and rng.random() < 0.5:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def cutout(image: np.ndarray, rng: np.random.Generator, *, length: int = 16) -> np.ndarray:
    """Zero a ``length x length`` square whose centre is uniform over the image, clipped at the
    borders (DeVries & Taylor 2017, "Improved regularization of convolutional neural networks
    with cutout"; their code uses 16 px on CIFAR-10, 8 px on CIFAR-100, one hole).

    Apply it after normalisation, as the reference code does, so the hole is the mean colour.
    """
    height, width = image.shape[:2]
    y, x = rng.integers(height), rng.integers(width)
    y0, y1 = np.clip([y - length // 2, y + length // 2], 0, height)
    x0, x1 = np.clip([x - length // 2, x + length // 2], 0, width)
    image = image.copy()
    image[y0:y1, x0:x1] = 0
    return image


def _to_pil(image: np.ndarray):
    """A PIL image of a ``uint8 [H, W, C]`` array (C = 1 or 3)."""
    from PIL import Image

    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def random_resized_crop(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    size: int = 224,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """Crop a random area fraction in ``scale`` with a log-uniform aspect ratio in ``ratio``,
    resize it to ``size x size`` (bilinear) and mirror left-right with probability 1/2.

    The ImageNet training augmentation of Szegedy et al. 2015 ("Going deeper with
    convolutions") as used by He et al. 2016 and torchvision ``RandomResizedCrop``: ten tries,
    then a centre crop clamped to ``ratio``.
    """
    from PIL import Image

    height, width = image.shape[:2]
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        w = round(np.sqrt(target * aspect))
        h = round(np.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            break
    else:
        w, h = width, height
        if width / height < ratio[0]:
            h = round(width / ratio[0])
        elif width / height > ratio[1]:
            w = round(height * ratio[1])
        top, left = (height - h) // 2, (width - w) // 2
    crop = _to_pil(image[top : top + h, left : left + w])
    out = np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out).reshape(size, size, -1)


def center_crop(image: np.ndarray, *, size: int = 224, resize: int = 256) -> np.ndarray:
    """Resize the shorter side to ``resize`` (bilinear) and take the central ``size x size``
    crop: the standard ImageNet evaluation view (He et al. 2016)."""
    from PIL import Image

    height, width = image.shape[:2]
    factor = resize / min(height, width)
    new_w, new_h = max(size, round(width * factor)), max(size, round(height * factor))
    img = _to_pil(image).resize((new_w, new_h), Image.Resampling.BILINEAR)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    out = np.asarray(img)[top : top + size, left : left + size]
    return np.ascontiguousarray(out).reshape(size, size, -1)


# The 25 sub-policies AutoAugment found on reduced CIFAR-10, as listed in the paper's appendix
# (Cubuk et al. 2019, "AutoAugment: Learning augmentation policies from data"): (operation,
# probability, magnitude index 0..9) twice. The same list is DeepVoltaire/AutoAugment's
# `CIFAR10Policy`, which the Dspike authors' later code uses, and torchvision's CIFAR10 policy;
# the authors' TensorFlow code (`policies.good_policies`) holds these among a longer list.
CIFAR10_POLICY: tuple[tuple[tuple[str, float, int], tuple[str, float, int]], ...] = (
    (("invert", 0.1, 7), ("contrast", 0.2, 6)),
    (("rotate", 0.7, 2), ("translate_x", 0.3, 9)),
    (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)),
    (("shear_y", 0.5, 8), ("translate_y", 0.7, 9)),
    (("autocontrast", 0.5, 8), ("equalize", 0.9, 2)),
    (("shear_y", 0.2, 7), ("posterize", 0.3, 7)),
    (("color", 0.4, 3), ("brightness", 0.6, 7)),
    (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
    (("equalize", 0.6, 5), ("equalize", 0.5, 1)),
    (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
    (("color", 0.7, 7), ("translate_x", 0.5, 8)),
    (("equalize", 0.3, 7), ("autocontrast", 0.4, 8)),
    (("translate_y", 0.4, 3), ("sharpness", 0.2, 6)),
    (("brightness", 0.9, 6), ("color", 0.2, 8)),
    (("solarize", 0.5, 2), ("invert", 0.0, 3)),
    (("equalize", 0.2, 0), ("autocontrast", 0.6, 0)),
    (("equalize", 0.2, 8), ("equalize", 0.6, 4)),
    (("color", 0.9, 9), ("equalize", 0.6, 6)),
    (("autocontrast", 0.8, 4), ("solarize", 0.2, 8)),
    (("brightness", 0.1, 3), ("color", 0.7, 0)),
    (("solarize", 0.4, 5), ("autocontrast", 0.9, 3)),
    (("translate_y", 0.9, 9), ("translate_y", 0.7, 9)),
    (("autocontrast", 0.9, 2), ("solarize", 0.8, 3)),
    (("equalize", 0.8, 8), ("invert", 0.1, 3)),
    (("translate_y", 0.7, 9), ("autocontrast", 0.9, 1)),
)

# Magnitude index 0..9 -> operation parameter, the paper's ranges as discretised by the
# reference implementations. Signed operations (shear, translate, rotate, enhancers) flip the
# sign with probability 1/2; translation is a fraction of the image size (150 px of 331).
_MAGNITUDES: dict[str, np.ndarray] = {
    "shear_x": np.linspace(0, 0.3, 10),
    "shear_y": np.linspace(0, 0.3, 10),
    "translate_x": np.linspace(0, 150 / 331, 10),
    "translate_y": np.linspace(0, 150 / 331, 10),
    "rotate": np.linspace(0, 30, 10),
    "color": np.linspace(0, 0.9, 10),
    "posterize": np.round(np.linspace(8, 4, 10)).astype(int),
    "solarize": np.linspace(256, 0, 10),
    "contrast": np.linspace(0, 0.9, 10),
    "sharpness": np.linspace(0, 0.9, 10),
    "brightness": np.linspace(0, 0.9, 10),
    "autocontrast": np.zeros(10),
    "equalize": np.zeros(10),
    "invert": np.zeros(10),
}
_FILL = (128, 128, 128)  # grey fill for pixels moved in from outside (reference code)


def _apply(img, name: str, magnitude: float, sign: float):
    """One AutoAugment operation on a PIL image."""
    from PIL import Image, ImageEnhance, ImageOps

    affine = {
        "shear_x": (1, sign * magnitude, 0, 0, 1, 0),
        "shear_y": (1, 0, 0, sign * magnitude, 1, 0),
        "translate_x": (1, 0, sign * magnitude * img.size[0], 0, 1, 0),
        "translate_y": (1, 0, 0, 0, 1, sign * magnitude * img.size[1]),
    }
    enhancers = {
        "color": ImageEnhance.Color,
        "contrast": ImageEnhance.Contrast,
        "sharpness": ImageEnhance.Sharpness,
        "brightness": ImageEnhance.Brightness,
    }
    if name in affine:
        resample = (
            Image.Resampling.BICUBIC if name.startswith("shear") else Image.Resampling.NEAREST
        )
        return img.transform(
            img.size, Image.Transform.AFFINE, affine[name], resample, fillcolor=_FILL
        )
    if name == "rotate":
        return img.rotate(sign * magnitude, fillcolor=_FILL)
    if name in enhancers:
        return enhancers[name](img).enhance(1 + sign * magnitude)
    if name == "posterize":
        return ImageOps.posterize(img, int(magnitude))
    if name == "solarize":
        return ImageOps.solarize(img, magnitude)
    operations = {
        "autocontrast": ImageOps.autocontrast,
        "equalize": ImageOps.equalize,
        "invert": ImageOps.invert,
    }
    return operations[name](img)


def autoaugment(
    image: np.ndarray,
    rng: np.random.Generator,
    policy: tuple[tuple[tuple[str, float, int], ...], ...] = CIFAR10_POLICY,
) -> np.ndarray:
    """AutoAugment (Cubuk et al. 2019): pick one sub-policy uniformly, apply each of its
    operations with its probability and magnitude. ``image`` is ``uint8 [H, W, 3]``.

    Follows the PIL reference implementations (the authors' code, DeepVoltaire/AutoAugment):
    grey fill, bicubic shear, nearest-neighbour translate and rotate. Rotation takes a random
    sign like every other signed operation, matching the paper's [-30, 30] degree range and the
    authors' code (DeepVoltaire's port only rotates counter-clockwise).
    """
    from PIL import Image

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"autoaugment expects a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}"
        )
    img = Image.fromarray(image)
    for name, probability, level in policy[rng.integers(len(policy))]:
        # Draw every number in a fixed order so the stream does not depend on the branch taken.
        apply, sign = rng.random() < probability, rng.choice((-1.0, 1.0))
        if apply:
            img = _apply(img, name, float(_MAGNITUDES[name][level]), sign)
    return np.asarray(img, dtype=np.uint8)
