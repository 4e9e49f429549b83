"""Training augmentation and input normalisation, numpy and OpenCV only.

``normalize`` is the one place an image becomes network input, for training, evaluation and
the runtime alike, so they cannot drift apart (STYLE.md, convention 2).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InputError
from .classes import IGNORE_INDEX

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TrainAugment", "normalize", "pad_to"]

#: ImageNet statistics in RGB order, those of the torchvision classifiers the FCN trunks start from.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_pair(image: np.ndarray, mask: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"image must be H×W×3 uint8 RGB, got {image.dtype} {image.shape}")
    if mask.dtype != np.uint8 or mask.shape != image.shape[:2]:
        raise InputError(f"mask must be H×W uint8 matching the image {image.shape[:2]}, got "
                         f"{mask.dtype} {mask.shape}")


def _shift(array: np.ndarray, dy: int, dx: int, fill: int) -> np.ndarray:
    """``array`` moved by (dy, dx) pixels on a canvas of the same size; uncovered pixels
    take ``fill``."""
    out = np.full_like(array, fill)
    h, w = array.shape[:2]
    if abs(dy) < h and abs(dx) < w:
        out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            array[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def pad_to(image: np.ndarray, mask: np.ndarray, height: int, width: int,
           ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """Pad on the bottom and right to ``height``×``width``: the image with 0, the mask with
    ``ignore_index`` so padding never counts in the loss or the metrics."""
    h, w = mask.shape
    if h > height or w > width:
        raise InputError(f"pad_to: a {h}×{w} sample does not fit in {height}×{width}")
    padding = ((0, height - h), (0, width - w))
    return (np.pad(image, padding + ((0, 0),), constant_values=0),
            np.pad(mask, padding, constant_values=ignore_index))


@dataclass(frozen=True)
class TrainAugment:
    """The paper's augmentation (§4.3, "Augmentation"): random mirroring and "jittering" by
    translating up to 32 px, the coarsest prediction stride, in each direction. Optional
    scaling and cropping are common additions (fixed-size batches), not in the paper.

    Applied in the order scale → mirror → translate → crop; image and mask always move
    together. Pixels shifted in, and crop padding, are ignored (mask = ``ignore_index``).
    """

    mirror: bool = True
    translate: int = 32
    scale: tuple[float, float] | None = None
    crop: tuple[int, int] | None = None
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        if self.translate < 0:
            raise InputError(f"translate must be ≥ 0 pixels, got {self.translate}")
        if self.scale is not None and not 0 < self.scale[0] <= self.scale[1]:
            raise InputError(f"scale must be (low, high) with 0 < low ≤ high, got {self.scale}")
        if self.crop is not None and (len(self.crop) != 2 or min(self.crop) < 1):
            raise InputError(f"crop must be (height, width) ≥ 1, got {self.crop}")
        if not 0 <= self.ignore_index <= 255:
            raise InputError(f"ignore_index must fit uint8, got {self.ignore_index}")

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
        _check_pair(image, mask)
        if self.scale is not None:
            image, mask = self._rescale(image, mask, rng.uniform(*self.scale))
        if self.mirror and rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if self.translate:
            dy, dx = (int(v) for v in rng.integers(-self.translate, self.translate + 1, 2))
            image, mask = _shift(image, dy, dx, 0), _shift(mask, dy, dx, self.ignore_index)
        if self.crop is not None:
            image, mask = self._random_crop(image, mask, rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)

    @staticmethod
    def _rescale(image: np.ndarray, mask: np.ndarray, factor: float
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Bilinear for the image; nearest for the mask, which must keep valid class ids."""
        h, w = mask.shape
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        return (cv2.resize(image, size, interpolation=cv2.INTER_LINEAR),
                cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST))

    def _random_crop(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
        """A random crop of ``self.crop``; a smaller sample is padded (ignored) first."""
        ch, cw = self.crop
        h, w = mask.shape
        if h < ch or w < cw:
            image, mask = pad_to(image, mask, max(h, ch), max(w, cw), self.ignore_index)
            h, w = mask.shape
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return image[y:y + ch, x:x + cw], mask[y:y + ch, x:x + cw]


def normalize(image: np.ndarray, mean: tuple[float, float, float] = IMAGENET_MEAN,
              std: tuple[float, float, float] = IMAGENET_STD) -> np.ndarray:
    """H×W×3 uint8 RGB → contiguous 3×H×W float32 ``(x / 255 - mean) / std``."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"normalize: image must be H×W×3 uint8 RGB, got {image.dtype} "
                         f"{image.shape}")
    mean64, std64 = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if mean64.shape != (3,) or std64.shape != (3,) or (std64 <= 0).any():
        raise InputError(f"normalize: mean and std need 3 values (std > 0), got {mean}, {std}")
    # One multiply-add per channel, written straight into the planar output.
    scale, bias = 1.0 / (255.0 * std64), -mean64 / std64
    out = np.empty((3,) + image.shape[:2], np.float32)
    for c in range(3):
        np.multiply(image[..., c], np.float32(scale[c]), out=out[c], dtype=np.float32)
        out[c] += np.float32(bias[c])
    return out
