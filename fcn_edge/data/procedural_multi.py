"""Procedural stand-ins for the paper's other settings (§5): RGB-D and two-task segmentation.

No NYUDv2 or SIFT Flow can be downloaded here, so these data sets extend the procedural scenes
(``procedural.py``) just enough to train the §5 nets end to end:

* ``ProceduralRGBD`` (NYUDv2-like) adds a depth map in metres to every scene, for early fusion
  (depth as a 4th input channel) and late fusion (a second stream on depth or HHA);
* ``ProceduralTwoTask`` (SIFT Flow-like) labels every scene twice: the semantic classes and
  three geometric classes (background / solid / thin), for a net with two heads.

The RGB image and semantic mask of image i are exactly ``ProceduralScenes``' for the same seed,
size and difficulty: the extra modality and labels are derived after the scene is drawn, from
a generator of their own, so no pixel of the RGB data set changes.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import InputError
from .base import Sample
from .classes import IGNORE_INDEX
from .procedural import PROCEDURAL_CLASSES, ProceduralScenes

__all__ = ["GEOMETRIC_CLASSES", "ProceduralRGBD", "ProceduralTwoTask", "depth_for_scene",
           "depth_from_png", "depth_to_png", "geometric_labels"]

GEOMETRIC_CLASSES: tuple[str, ...] = ("background", "solid", "thin")

_SOLID = ("disc", "rectangle", "triangle", "star", "blob")
_THIN = ("ring", "wire")
# Semantic id → geometric id; 255 (ignore) stays 255; anything else is not a procedural label.
_GEOMETRIC_LUT = np.full(256, 255, np.uint8)
_GEOMETRIC_LUT[0] = 0
_GEOMETRIC_LUT[[PROCEDURAL_CLASSES.index(c) for c in _SOLID]] = 1
_GEOMETRIC_LUT[[PROCEDURAL_CLASSES.index(c) for c in _THIN]] = 2
_KNOWN = np.zeros(256, bool)
_KNOWN[:len(PROCEDURAL_CLASSES)] = True
_KNOWN[IGNORE_INDEX] = True

# Depth model (metres). The floor is a plane seen from above the ground: inverse depth is
# linear in the image row, from NEAR at the bottom row to FAR at the top.
_NEAR = (1.3, 1.7)          # bottom row of the floor
_FAR = (5.0, 7.0)           # top row of the floor
_OFFSET = (0.5, 2.5)        # how much nearer than the floor behind it each class stands
_MIN_DEPTH = 0.4            # nothing is nearer than this (Kinect's minimum range is ~0.5 m)
_NOISE = 0.003              # smooth noise std = _NOISE · d² (Kinect's error grows with d²)
_NOISE_CELL = 12            # px between the smooth noise field's control points
_INVALID = (0.001, 0.01)    # share of pixels with no reading (depth 0), per scene
_PNG_SCALE = 1000.0         # depth PNGs store millimetres, as NYUDv2's raw depth does


def geometric_labels(mask: np.ndarray) -> np.ndarray:
    """The geometric labels of a procedural semantic mask: background → 0; disc, rectangle,
    triangle, star, blob → 1 ("solid"); ring, wire → 2 ("thin"); 255 stays 255."""
    mask = np.asarray(mask)
    if mask.dtype != np.uint8:
        raise InputError(f"a label map is uint8, got {mask.dtype}")
    unknown = ~_KNOWN[mask]
    if unknown.any():
        raise InputError(f"label {int(mask[unknown][0])} is not a procedural class id "
                         f"(0..{len(PROCEDURAL_CLASSES) - 1} or {IGNORE_INDEX})")
    return _GEOMETRIC_LUT[mask]


def depth_for_scene(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """An H×W float32 depth map in metres for the scene labelled ``mask``, drawn from ``rng``.

    The depth is derived from the label map alone: the background (and ignored pixels) is a
    floor plane receding towards the top of the image (~1.5 m at the bottom row, ~6 m at the
    top); every object class present stands at its own distance, drawn per scene, 0.5–2.5 m
    nearer than the floor behind it (never nearer than 0.4 m). Smooth noise growing with the
    square of the distance and a few pixels with no reading (0) imitate a Kinect.

    So depth tells objects from the background, and thin structures (wires, rings) stand out as
    discontinuities of their own even where their colour blends in; it does not tell the
    classes apart (a class's distance changes from scene to scene), and overlapping objects
    need not be ordered as their occlusion in the image is. That is the honest extent of what
    this stand-in can teach, and what early and late fusion should learn to exploit.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or min(mask.shape) < 2:
        raise InputError(f"a label map is H×W (at least 2×2), got shape {mask.shape}")
    h, w = mask.shape
    near, far = rng.uniform(*_NEAR), rng.uniform(*_FAR)
    fraction = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]  # 0 at the top row
    floor = 1.0 / (1.0 / far + fraction * (1.0 / near - 1.0 / far))  # H×1
    offsets = rng.uniform(*_OFFSET, 256).astype(np.float32)  # one per label, drawn every time
    offsets[0] = offsets[IGNORE_INDEX] = 0.0
    depth = np.maximum(floor - offsets[mask], np.float32(_MIN_DEPTH)).astype(np.float32)
    cells = (h // _NOISE_CELL + 2, w // _NOISE_CELL + 2)
    noise = cv2.resize(rng.standard_normal(cells, dtype=np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    depth += noise * np.float32(_NOISE) * depth * depth
    depth = np.maximum(depth, np.float32(_MIN_DEPTH) * 0.9)  # noise cannot reach 0 (invalid)
    depth[rng.random((h, w)) < rng.uniform(*_INVALID)] = 0.0
    return depth


def depth_to_png(depth_m: np.ndarray) -> np.ndarray:
    """Metres → uint16 millimetres, as depth PNGs store them (NYUDv2); pixels with no reading
    (0, negative, NaN, inf) and those beyond 65.535 m become 0."""
    depth = np.asarray(depth_m, np.float64)
    millimetres = np.round(np.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0) * _PNG_SCALE)
    millimetres[(millimetres < 0) | (millimetres > np.iinfo(np.uint16).max)] = 0
    return millimetres.astype(np.uint16)


def depth_from_png(png: np.ndarray) -> np.ndarray:
    """uint16 millimetres (a depth PNG read with ``cv2.IMREAD_UNCHANGED``) → float32 metres;
    0 stays 0 (no reading)."""
    png = np.asarray(png)
    if png.dtype != np.uint16:
        raise InputError(f"a depth PNG holds uint16 millimetres, got {png.dtype}")
    return png.astype(np.float32) / np.float32(_PNG_SCALE)


class ProceduralRGBD(ProceduralScenes):
    """``ProceduralScenes`` plus ``inputs["depth"]`` (H×W float32 metres, 0 = no reading):
    a NYUDv2-like RGB-D set. The depth of image i is seeded by (seed, i) on a stream apart from
    the image's, so image and mask are ``ProceduralScenes``' own."""

    layout = "synthetic-rgbd"

    def __getitem__(self, index: int) -> Sample:
        index = self._index(index)
        sample = super().__getitem__(index)
        depth = depth_for_scene(np.random.default_rng([self.seed, index, 1]), sample.mask)
        return sample._replace(inputs={"depth": depth})

    def __repr__(self) -> str:
        return (f"ProceduralRGBD(num_images={self.num_images}, size={self.size}, "
                f"seed={self.seed}, difficulty={self.difficulty!r})")


class ProceduralTwoTask(ProceduralScenes):
    """``ProceduralScenes`` labelled for two tasks, like SIFT Flow: ``masks["semantic"]`` (the
    eight procedural classes, also in ``mask``) and ``masks["geometric"]`` (background, solid,
    thin). ``tasks`` maps each task to its class names; "semantic" is the primary task."""

    layout = "synthetic-twotask"
    primary_task = "semantic"

    def __init__(self, num_images: int = 1000, size: tuple[int, int] = (256, 256),
                 seed: int = 0, difficulty: str = "standard") -> None:
        super().__init__(num_images, size, seed, difficulty)
        self.tasks: dict[str, tuple[str, ...]] = {"semantic": PROCEDURAL_CLASSES,
                                                  "geometric": GEOMETRIC_CLASSES}

    def __getitem__(self, index: int) -> Sample:
        sample = super().__getitem__(index)
        return sample._replace(masks={"semantic": sample.mask,
                                      "geometric": geometric_labels(sample.mask)})

    def __repr__(self) -> str:
        return (f"ProceduralTwoTask(num_images={self.num_images}, size={self.size}, "
                f"seed={self.seed}, difficulty={self.difficulty!r})")
