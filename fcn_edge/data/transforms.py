"""Training augmentation and input normalisation, numpy and OpenCV only.

``normalize`` makes an image network input with the runtime's own ``frames_to_input``, so
training, evaluation and deployment cannot drift apart (docs/architecture.md, "The layers").
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InputError
from ..runtime.processing import IMAGENET_MEAN, IMAGENET_STD, frames_to_input
from .base import Sample
from .classes import IGNORE_INDEX

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TrainAugment", "normalize", "pad_to"]

LINEAR, NEAREST = cv2.INTER_LINEAR, cv2.INTER_NEAREST


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


def _pad(array: np.ndarray, height: int, width: int, fill: int) -> np.ndarray:
    """Pad on the bottom and right to ``height``×``width`` with ``fill``."""
    padding = ((0, height - array.shape[0]), (0, width - array.shape[1]))
    return np.pad(array, padding + ((0, 0),) * (array.ndim - 2), constant_values=fill)


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
    together (``sample`` moves extra modalities and task masks with them). Pixels shifted in,
    and crop padding, are ignored (mask = ``ignore_index``). Images resample bilinearly, masks
    nearest, as they must keep valid class ids.
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
        image, mask = self._apply([(image, LINEAR, 0), (mask, NEAREST, self.ignore_index)], rng)
        return image, mask

    def sample(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """``sample`` with every array moved alike: the image, the mask, every task's mask
        (ignored where shifted in) and every extra input (paper §5: depth and HHA, 0 = no
        reading where shifted in; depth resampled nearest so no value mixes two surfaces).
        The random draws are those of ``__call__``: the image and mask come out the same."""
        _check_pair(sample.image, sample.mask)
        inputs, masks = dict(sample.inputs or {}), dict(sample.masks or {})
        for name, array in [*inputs.items(), *masks.items()]:
            if array.shape[:2] != sample.mask.shape:
                raise InputError(f"{sample.name}: '{name}' is {array.shape[:2]}, the image "
                                 f"{sample.mask.shape}: every modality and mask must match it")
        arrays = [(sample.image, LINEAR, 0), (sample.mask, NEAREST, self.ignore_index)]
        arrays += [(a, NEAREST if a.ndim == 2 else LINEAR, 0) for a in inputs.values()]
        arrays += [(m, NEAREST, self.ignore_index) for m in masks.values()]
        out = self._apply(arrays, rng)
        n = len(inputs)
        return sample._replace(
            image=out[0], mask=out[1],
            inputs=dict(zip(inputs, out[2:2 + n])) if sample.inputs is not None else None,
            masks=dict(zip(masks, out[2 + n:])) if sample.masks is not None else None)

    def _apply(self, arrays: list[tuple[np.ndarray, int, int]], rng: np.random.Generator
               ) -> list[np.ndarray]:
        """Scale → mirror → translate → crop on every (array, interpolation, fill) alike."""
        out = [a for a, _, _ in arrays]
        if self.scale is not None:
            factor = rng.uniform(*self.scale)
            h, w = out[0].shape[:2]
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            out = [cv2.resize(a, size, interpolation=how) for a, (_, how, _) in zip(out, arrays)]
        if self.mirror and rng.random() < 0.5:
            out = [a[:, ::-1] for a in out]
        if self.translate:
            dy, dx = (int(v) for v in rng.integers(-self.translate, self.translate + 1, 2))
            out = [_shift(a, dy, dx, fill) for a, (_, _, fill) in zip(out, arrays)]
        if self.crop is not None:
            out = self._random_crop(out, [fill for _, _, fill in arrays], rng)
        return [np.ascontiguousarray(a) for a in out]

    def _random_crop(self, arrays: list[np.ndarray], fills: list[int],
                     rng: np.random.Generator) -> list[np.ndarray]:
        """A random crop of ``self.crop``; a smaller sample is padded (with ``fills``) first."""
        ch, cw = self.crop
        h, w = arrays[0].shape[:2]
        if h < ch or w < cw:
            arrays = [_pad(a, max(h, ch), max(w, cw), fill) for a, fill in zip(arrays, fills)]
            h, w = arrays[0].shape[:2]
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return [a[y:y + ch, x:x + cw] for a in arrays]


def normalize(image: np.ndarray, mean: tuple[float, float, float] = IMAGENET_MEAN,
              std: tuple[float, float, float] = IMAGENET_STD) -> np.ndarray:
    """H×W×3 uint8 RGB → contiguous 3×H×W float32 ``(x / 255 - mean) / std``: the runtime's
    ``frames_to_input`` for one RGB image, the very computation deployment runs."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"normalize: image must be H×W×3 uint8 RGB, got {image.dtype} "
                         f"{image.shape}")
    return frames_to_input(image, mean, std, color_order="rgb", frame_order="rgb")[0]
