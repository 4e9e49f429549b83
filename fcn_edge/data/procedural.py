"""Procedural scenes: the built-in data set, generated on the fly and identical on every machine.

Each image is a cluttered background with 2–7 objects of seven classes, recognisable by
combining cues, as in real images:

* colour: each class has a characteristic hue range;
* texture: objects are flat, striped, checkered, gradient or noisy; blobs are always noisy;
* shape and size vary (ellipses, rotated rectangles, 4–7 point stars, irregular blobs);
* wires are 2–4 px lines (1–3 when hard): far below FCN-32s's 32 px output stride, so the skips of FCN-8s
  (§4.2) are needed to segment them;
* the background is saturation-poor (gradients, colour blotches, stripes) and holds distractor
  copies of the shapes in background colours, labelled background: shape alone is not enough.

Two difficulties. ``standard`` (the default) gives every class its own hue range. ``hard``
makes single cues insufficient: disc/ring share reds and rectangle/star share blues, so shape
must tell them apart; one object in five takes its hue from a random class's range; and there
are three times as many distractors. A small net trained from scratch on a CPU for minutes
learns ``standard`` well; ``hard`` needs far more training (see BENCHMARKS.md).

Later objects occlude earlier ones; a camera pass adds uneven lighting, slight blur and noise.
Classes are left unbalanced (background is ~85% of pixels, wires < 1%), as in VOC: the paper
found class balancing unnecessary (§4.3 "Class Balancing").
Image i depends only on (seed, i): its generator is seeded by both, so any order, any worker
process and any subset give the same pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from ..errors import InputError
from .base import Sample, SegmentationDataset
from .classes import voc_palette

__all__ = ["DIFFICULTIES", "PROCEDURAL_CLASSES", "ProceduralScenes", "render_scene"]

PROCEDURAL_CLASSES: tuple[str, ...] = (
    "background", "disc", "rectangle", "triangle", "ring", "star", "wire", "blob")


@dataclass(frozen=True)
class Difficulty:
    """Per class an OpenCV hue range (0..179); the share of objects whose hue comes from a
    random class's range instead; background-coloured distractor shapes per image [low, high)."""

    hues: dict[int, tuple[int, int]]
    off_hue: float
    distractors: tuple[int, int]
    wire_width: tuple[int, int]  # [low, high] pixels across; 4 at most


DIFFICULTIES = {
    # Seven hue ranges ~25 apart on the colour wheel: disc red, wire orange, triangle green,
    # rectangle cyan, star blue, blob purple, ring magenta.
    "standard": Difficulty({1: (0, 8), 6: (20, 30), 3: (50, 62), 2: (84, 94), 5: (110, 120),
                            7: (135, 145), 4: (160, 170)}, off_hue=0.0, distractors=(1, 4),
                           wire_width=(2, 4)),
    "hard": Difficulty({1: (0, 14), 2: (100, 122), 3: (48, 72), 4: (0, 14), 5: (100, 122),
                        6: (22, 34), 7: (140, 166)}, off_hue=0.2, distractors=(3, 12),
                       wire_width=(1, 3)),
}
_TEXTURES = {
    1: ("flat", "stripes", "gradient", "noise"),
    2: ("flat", "stripes", "checker", "gradient"),
    3: ("flat", "checker", "gradient", "noise"),
    4: ("flat", "stripes", "gradient"),
    5: ("flat", "checker", "noise", "gradient"),
    6: ("flat",),   # 1–3 px: a texture would not show
    7: ("noise",),  # the "textured blob"
}
_OBJECTS = (2, 8)          # objects per image: [low, high)
_RADIUS = (0.05, 0.22)     # object radius as a fraction of the shorter image side

Shape = Callable[[np.random.Generator, np.ndarray], None]


def _place(rng: np.random.Generator, canvas: np.ndarray) -> tuple[float, float, float]:
    """(x, y, radius): centres may lie a little outside, so objects are cut by the frame."""
    h, w = canvas.shape
    x, y = rng.uniform(-0.05, 1.05) * w, rng.uniform(-0.05, 1.05) * h
    return x, y, rng.uniform(*_RADIUS) * min(h, w)


def _polygon(canvas: np.ndarray, x: float, y: float, angles: np.ndarray,
             radii: np.ndarray) -> None:
    points = np.stack([x + radii * np.cos(angles), y + radii * np.sin(angles)], axis=1)
    cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)


def _disc(rng: np.random.Generator, canvas: np.ndarray) -> None:
    x, y, r = _place(rng, canvas)
    axes = (max(2, round(r)), max(2, round(r * rng.uniform(0.75, 1.0))))
    cv2.ellipse(canvas, (round(x), round(y)), axes, rng.uniform(0, 180), 0, 360, 1, -1)


def _ring(rng: np.random.Generator, canvas: np.ndarray) -> None:
    x, y, r = _place(rng, canvas)
    r = max(r, 8.0)
    width = max(3, round(r * rng.uniform(0.25, 0.5)))  # the hole shows what lies beneath
    mid = r - width / 2
    axes = (round(mid), round(mid * rng.uniform(0.8, 1.0)))
    cv2.ellipse(canvas, (round(x), round(y)), axes, rng.uniform(0, 180), 0, 360, 1, width)


def _rectangle(rng: np.random.Generator, canvas: np.ndarray) -> None:
    x, y, r = _place(rng, canvas)
    box = ((x, y), (r * rng.uniform(0.8, 2.0), r * rng.uniform(0.5, 1.5)), rng.uniform(0, 180))
    cv2.fillPoly(canvas, [np.round(cv2.boxPoints(box)).astype(np.int32)], 1)


def _triangle(rng: np.random.Generator, canvas: np.ndarray) -> None:
    x, y, r = _place(rng, canvas)
    angles = rng.uniform(0, 2 * math.pi) + np.arange(3) * 2 * math.pi / 3 + rng.uniform(-.3, .3, 3)
    _polygon(canvas, x, y, angles, r * rng.uniform(0.7, 1.2, 3))


def _star(rng: np.random.Generator, canvas: np.ndarray) -> None:
    x, y, r = _place(rng, canvas)
    points = int(rng.integers(4, 8))
    angles = rng.uniform(0, 2 * math.pi) + np.arange(2 * points) * math.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, r, r * rng.uniform(0.35, 0.55))
    _polygon(canvas, x, y, angles, radii)


def _wire(rng: np.random.Generator, canvas: np.ndarray, widths: tuple[int, int] = (1, 3)
          ) -> None:
    """1–3 cables or poles, each ``widths`` px wide and crossing much of the image."""
    h, w = canvas.shape
    for _ in range(int(rng.integers(1, 4))):
        start = rng.uniform(0, 1, 2) * (w, h)
        # Half of them nearly vertical (poles), the rest at any angle (cables).
        angle = (math.pi / 2 + rng.uniform(-0.15, 0.15) if rng.random() < 0.5
                 else rng.uniform(0, math.pi))
        length = rng.uniform(0.35, 1.0) * min(h, w)
        end = start + length * np.array([math.cos(angle), math.sin(angle)])
        sag = (start + end) / 2 + rng.normal(0, 0.05 * length, 2)  # a cable sags
        points = np.round(np.stack([start, sag, end])).astype(np.int32)
        width = int(rng.integers(widths[0], widths[1] + 1))
        # OpenCV draws thickness 2 as 3 px across (and 3 as 5): 2 px is two 1 px lines side
        # by side, 4 px two 3 px lines.
        cv2.polylines(canvas, [points], False, 1, 2 if width >= 3 else 1, cv2.LINE_8)
        if width in (2, 4):
            across = (0, 1) if abs(math.cos(angle)) > abs(math.sin(angle)) else (1, 0)
            cv2.polylines(canvas, [points + np.array(across, np.int32)], False, 1, 1, cv2.LINE_8)


def _blob(rng: np.random.Generator, canvas: np.ndarray) -> None:
    x, y, r = _place(rng, canvas)
    angles = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    radii = np.full(48, r)
    for k in range(2, 5):  # low harmonics: smooth, irregular outlines
        radii += r * rng.uniform(0, 0.18) * np.cos(k * angles + rng.uniform(0, 2 * math.pi))
    _polygon(canvas, x, y, angles, radii)


_SHAPES: dict[int, Shape] = {1: _disc, 2: _rectangle, 3: _triangle, 4: _ring, 5: _star,
                             6: _wire, 7: _blob}


def _pattern(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray | None:
    """An h×w float32 field in [0, 1] mixing a texture's two colours (None: flat)."""
    if kind == "flat":
        return None
    if kind == "noise":
        cell = rng.uniform(2, 8)
        small = rng.random((int(h / cell) + 2, int(w / cell) + 2), dtype=np.float32)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    yy, xx = np.ogrid[:h, :w]
    if kind == "checker":
        cell = int(rng.integers(3, 12))
        return ((yy // cell + xx // cell) % 2).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (xx * math.cos(angle) + yy * math.sin(angle)).astype(np.float32)
    if kind == "stripes":
        return ((ramp / rng.uniform(4, 16)) % 1.0 < 0.5).astype(np.float32)
    return (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)  # gradient


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """N×3 float HSV (OpenCV ranges: hue 0..179) → N×3 float32 RGB."""
    hsv = np.asarray(hsv, np.float32).copy()
    hsv[:, 0] %= 180
    pixels = np.clip(np.round(hsv), 0, 255).astype(np.uint8)[None]
    return cv2.cvtColor(pixels, cv2.COLOR_HSV2RGB)[0].astype(np.float32)


def _object_colours(rng: np.random.Generator, label: int, level: Difficulty) -> np.ndarray:
    """Two saturated colours (base, texture) of nearby hue from the class's range."""
    off = level.off_hue > 0 and rng.random() < level.off_hue
    hues = level.hues[int(rng.integers(1, 8)) if off else label]
    hue, value = rng.uniform(*hues), rng.uniform(110, 255)
    alt_value = np.clip(value + rng.choice([-1, 1]) * rng.uniform(40, 100), 60, 255)
    return _hsv_to_rgb([(hue, rng.uniform(120, 255), value),
                        (hue + rng.uniform(-4, 4), rng.uniform(110, 255), alt_value)])


def _background_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """n saturation-poor colours (greys, browns, muted tints): the background's palette."""
    return _hsv_to_rgb(np.stack([rng.uniform(0, 180, n), rng.uniform(0, 70, n),
                                 rng.uniform(35, 230, n)], axis=1))


def _paint(rng: np.random.Generator, image: np.ndarray, canvas: np.ndarray, shape: int,
           colours: np.ndarray, texture: str, level: Difficulty) -> tuple[slice, slice, np.ndarray] | None:
    """Draw ``shape`` over ``image`` in a texture of ``colours``; returns where it landed."""
    canvas[:] = 0
    if shape == 6:
        _wire(rng, canvas, level.wire_width)
    else:
        _SHAPES[shape](rng, canvas)
    x, y, w, h = cv2.boundingRect(canvas)
    if w == 0 or h == 0:
        return None
    rows, cols = slice(y, y + h), slice(x, x + w)
    region = canvas[rows, cols].view(bool)
    mix = _pattern(rng, texture, h, w)
    fill = colours[0] if mix is None else colours[0] + mix[..., None] * (colours[1] - colours[0])
    np.copyto(image[rows, cols], fill, where=region[..., None])
    return rows, cols, region


def _background(rng: np.random.Generator, h: int, w: int, canvas: np.ndarray,
                level: Difficulty) -> np.ndarray:
    """A float32 H×W×3 cluttered background: gradient, colour blotches, maybe stripes or a
    checker, and background-coloured copies of the object shapes."""
    c0, c1 = _background_colours(rng, 2)
    image = c0 + _pattern(rng, "gradient", h, w)[..., None] * (c1 - c0)
    cell = rng.uniform(8, 32)
    blotches = rng.standard_normal((int(h / cell) + 2, int(w / cell) + 2, 3), dtype=np.float32)
    image += cv2.resize(blotches, (w, h), interpolation=cv2.INTER_CUBIC) * rng.uniform(5, 18)
    if rng.random() < 0.35:
        texture = _pattern(rng, str(rng.choice(["stripes", "checker"])), h, w)
        image += (texture[..., None] - 0.5) * rng.uniform(10, 30)
    for _ in range(int(rng.integers(*level.distractors))):
        texture = str(rng.choice(["flat", "flat", "stripes", "noise"]))
        _paint(rng, image, canvas, int(rng.integers(1, 8)), _background_colours(rng, 2), texture,
               level)
    return image


def _camera(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Uneven lighting (hue-preserving), slight defocus and sensor noise; float → uint8."""
    h, w = image.shape[:2]
    light = rng.uniform(0.75, 1.2, (3, 3)).astype(np.float32)
    image *= cv2.resize(light, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 0.8))
    # Uniform rather than Gaussian noise: 4× cheaper to draw, and a net cannot tell.
    noise = rng.random((h, w, 3), dtype=np.float32) - np.float32(0.5)
    image += noise * np.float32(rng.uniform(1, 6) * math.sqrt(12))  # std 1–6 grey levels
    return np.clip(image, 0, 255).astype(np.uint8)


def render_scene(rng: np.random.Generator, height: int, width: int,
                 difficulty: str = "standard") -> tuple[np.ndarray, np.ndarray]:
    """One scene: (H×W×3 uint8 RGB image, H×W uint8 label map) drawn from ``rng``."""
    level = _difficulty(difficulty)
    canvas = np.zeros((height, width), np.uint8)  # one drawing surface, reused per shape
    image = _background(rng, height, width, canvas, level)
    mask = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(*_OBJECTS))):
        label = int(rng.integers(1, len(PROCEDURAL_CLASSES)))
        texture = str(rng.choice(_TEXTURES[label]))
        placed = _paint(rng, image, canvas, label, _object_colours(rng, label, level),
                        texture, level)
        if placed is not None:  # later objects overwrite earlier ones: occlusion
            rows, cols, region = placed
            mask[rows, cols][region] = label
    return _camera(rng, image), mask


def _difficulty(name: str) -> Difficulty:
    if name not in DIFFICULTIES:
        raise InputError(f"unknown difficulty {name!r}; choose one of {', '.join(DIFFICULTIES)}")
    return DIFFICULTIES[name]


class ProceduralScenes(SegmentationDataset):
    """``num_images`` procedural scenes of ``size`` = (height, width) pixels; image i is the
    same for a given ``seed`` whatever order it is asked in."""

    layout = "synthetic"

    def __init__(self, num_images: int = 1000, size: tuple[int, int] = (256, 256),
                 seed: int = 0, difficulty: str = "standard") -> None:
        if int(num_images) < 1:
            raise InputError(f"num_images must be ≥ 1, got {num_images}")
        if not isinstance(size, (tuple, list)) or len(size) != 2 or min(map(int, size)) < 16:
            raise InputError(f"size must be (height, width), each ≥ 16 px, got {size}")
        if int(seed) < 0:
            raise InputError(f"seed must be ≥ 0, got {seed}")
        _difficulty(difficulty)
        self.num_images, self.seed, self.difficulty = int(num_images), int(seed), difficulty
        self.size = (int(size[0]), int(size[1]))
        self.classes = PROCEDURAL_CLASSES
        self.palette = voc_palette(len(PROCEDURAL_CLASSES))
        self.split = "train"

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> Sample:
        index = self._index(index)
        rng = np.random.default_rng([self.seed, index])  # per image: order-independent
        image, mask = render_scene(rng, *self.size, self.difficulty)
        return Sample(image, mask, f"scene_{self.seed}_{index:06d}")

    def __repr__(self) -> str:
        return (f"ProceduralScenes(num_images={self.num_images}, size={self.size}, "
                f"seed={self.seed}, difficulty={self.difficulty!r})")
