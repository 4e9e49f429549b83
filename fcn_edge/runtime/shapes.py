"""Optimisation profiles: the (batch, height, width) bounds an artifact was verified for.

``fcn-edge export --shapes`` writes one into an artifact's metadata, TensorRT builds its engine
for it, and the Segmenter resizes frames into it. Plain Python, part of the artifact schema
(``metadata.py`` re-exports these names).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import InputError, ModelFormatError
from .fields import integer

#: The largest batch and side a profile may name: beyond them an artifact's shapes are garbage
#: (a 16384×16384 float32 frame is already 3 GiB), not a plan to run.
MAX_BATCH = 1024
MAX_SIDE = 16384


@dataclass(frozen=True)
class Shapes:
    """An optimisation profile: (batch, height, width) at its minimum, optimum and maximum."""

    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or len(value) != 3 or any(
                    isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
                raise InputError(f"shape {name}={value}: need three positive integers "
                                 f"(batch, height, width)")
            if value[0] > MAX_BATCH or max(value[1:]) > MAX_SIDE:
                raise InputError(f"shape {name}={value}: batch at most {MAX_BATCH}, height "
                                 f"and width at most {MAX_SIDE}")
        for axis, label in enumerate(("batch", "height", "width")):
            if not self.min[axis] <= self.opt[axis] <= self.max[axis]:
                raise InputError(f"shapes: {label} must satisfy min ≤ opt ≤ max, got "
                                 f"{self.min[axis]}, {self.opt[axis]}, {self.max[axis]}")

    def check_multiple(self, multiple: int) -> None:
        """Refuse heights/widths that are not multiples of ``multiple`` (1: any size)."""
        for name in ("min", "opt", "max"):
            _, h, w = getattr(self, name)
            if h % multiple or w % multiple:
                raise InputError(f"shapes: {name} {h}x{w} is not a multiple of {multiple}, "
                                 f"which this model's layout needs")

    def holds_multiple(self, multiple: int) -> bool:
        """Whether some height and width between min and max are multiples of ``multiple``
        (else no frame can run at a size the artifact allows)."""
        return all(-(-lo // multiple) * multiple <= hi
                   for lo, hi in zip(self.min[1:], self.max[1:]))

    def covers(self, batch: int, height: int, width: int) -> bool:
        return all(lo <= v <= hi for lo, v, hi in zip(self.min, (batch, height, width), self.max))

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Shapes":
        try:
            return cls(*(tuple(integer(v) for v in data[k]) for k in ("min", "opt", "max")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"malformed shapes {data!r}: {exc}") from None

    def __str__(self) -> str:
        return ":".join("x".join(str(v) for v in s) for s in (self.min, self.opt, self.max))


_SHAPE = re.compile(r"^(?:(\d{1,9})x)?(\d{1,9})x(\d{1,9})$")  # longer: garbage


def parse_shapes(text: str) -> Shapes:
    """``MIN:OPT:MAX``, each ``HxW`` (batch 1) or ``NxHxW``, e.g. ``256x256:512x512:1024x1024``."""
    parts = text.strip().lower().split(":")
    if len(parts) != 3:
        raise InputError(f"--shapes {text!r}: expected MIN:OPT:MAX, e.g. "
                         f"256x256:512x512:1024x1024 (HxW) or 1x256x256:4x512x512:8x1024x1024")
    dims = []
    for part in parts:
        match = _SHAPE.match(part.strip())
        if not match:
            raise InputError(f"--shapes {text!r}: {part!r} is not HxW or NxHxW")
        n, h, w = match.groups()
        dims.append((int(n or 1), int(h), int(w)))
    return Shapes(*dims)


def default_shapes(train_size: tuple[int, int] | None, stride: int = 32) -> Shapes:
    """Recommended profile: 32×32 up to 2048×2048, optimal at the training size (rounded up to
    the output stride), batch 1. Any size works with ONNX Runtime; the profile bounds TensorRT."""
    h, w = train_size or (512, 512)
    opt = tuple(min(2048, max(32, -(-v // stride) * stride)) for v in (h, w))
    return Shapes((1, 32, 32), (1,) + opt, (1, 2048, 2048))
