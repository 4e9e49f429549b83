"""Layer geometry: where a feature-map cell sits in the input, and how big each map is.

The paper (§3.3, §4.2) upsamples coarse scores with deconvolution and fuses them with finer
skip scores; the reference Caffe nets align the maps with hand-entered crop offsets (5, 9, 31,
...). We *derive* every offset instead: each layer maps an output coordinate ``x`` to an input
coordinate ``a·x + b`` (``a`` = stride, ``b`` = receptive-field centre shift), and composing those
maps from the data layer to a blob tells where its cells sit. Two blobs of the same stride are
then aligned by an integer crop, and the deconvolution kernel that lines up exactly is chosen
(odd kernel when cells fall on pixels, even when they fall between them).

Everything here is plain integer/fraction arithmetic: no torch, so it is cheap to test.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Affine:
    """``input_coordinate = stride * cell + offset`` (in pixels of the network input)."""

    stride: Fraction = Fraction(1)
    offset: Fraction = Fraction(0)

    def then(self, layer: "Affine") -> "Affine":
        """The map of ``layer`` applied after ``self`` (``layer`` takes this blob as input)."""
        return Affine(self.stride * layer.stride, self.stride * layer.offset + self.offset)


@dataclass(frozen=True)
class LayerGeom:
    """Spatial hyper-parameters of a convolution or pooling layer (one axis)."""

    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    ceil_mode: bool = False

    @property
    def affine(self) -> Affine:
        # Output cell x is centred on input s·x − p + d·(k−1)/2 (Caffe's coord_map rule).
        centre = Fraction(self.dilation * (self.kernel - 1), 2)
        return Affine(Fraction(self.stride), centre - self.padding)

    def out_size(self, n: int) -> int:
        """Output length for input length ``n`` (PyTorch's rule); ≤ 0 means the input is too small."""
        span = n + 2 * self.padding - self.dilation * (self.kernel - 1) - 1
        out = (span + (self.stride - 1 if self.ceil_mode else 0)) // self.stride + 1
        # In ceil mode PyTorch drops a last window that would start inside the right padding.
        if self.ceil_mode and (out - 1) * self.stride >= n + self.padding:
            out -= 1
        return max(out, 0)


def geom_of(module) -> LayerGeom | None:
    """The geometry of a torch Conv2d/MaxPool2d/AvgPool2d along the height axis, else None."""
    kernel = getattr(module, "kernel_size", None)
    if kernel is None:
        return None

    def first(v):
        return v[0] if isinstance(v, (tuple, list)) else v

    return LayerGeom(
        kernel=first(kernel),
        stride=first(module.stride),
        padding=first(module.padding),
        dilation=first(getattr(module, "dilation", 1)),
        ceil_mode=bool(getattr(module, "ceil_mode", False)),
    )


def chain(geoms: Iterable[LayerGeom]) -> Affine:
    """Compose the maps of layers applied in order (first layer reads the input)."""
    total = Affine()
    for g in geoms:
        total = total.then(g.affine)
    return total


def chain_size(geoms: Sequence[LayerGeom], n: int) -> int:
    """Length of the map after ``geoms`` for an input of length ``n`` (0 when it vanishes)."""
    for g in geoms:
        n = g.out_size(n) if n > 0 else 0
    return n


@dataclass(frozen=True)
class Upsampling:
    """A bilinear deconvolution from a coarse blob to a finer one and the crop that aligns them.

    ``crop`` ≥ 0: the upsampled map starts ``crop`` cells before the fine blob, so the upsampled
    map is cropped; ``crop`` < 0: the fine blob is cropped by ``-crop`` (the reference nets' case).
    """

    factor: int
    kernel: int
    crop: int

    def out_size(self, n: int) -> int:
        return (n - 1) * self.factor + self.kernel


def plan_upsampling(coarse: Affine, fine: Affine) -> Upsampling:
    """Choose the deconvolution kernel and crop that put ``coarse`` exactly onto ``fine``.

    A stride-f deconvolution without padding puts coarse cell x at upsampled cell f·x + (k−1)/2,
    which lies at input pixel ``fine.stride·(f·x + (k−1)/2) + o_up``. Matching that to the coarse
    cell's own position gives the crop; it is an integer only for one kernel parity, so the parity
    is chosen from the offsets: size 2f when the cells fall half-way between fine cells, 2f−1
    when they fall on them. The bilinear weights of either size come from ``bilinear_kernel``.
    """
    ratio = coarse.stride / fine.stride
    if ratio.denominator != 1 or ratio < 1:
        raise ValueError(f"cannot upsample stride {coarse.stride} onto stride {fine.stride}")
    factor = int(ratio)
    shift = (coarse.offset - fine.offset) / fine.stride  # coarse cell 0, in fine cells
    if shift.denominator == 1:
        kernel = 2 * factor - 1 if factor > 1 else 1
    elif shift.denominator == 2:
        kernel = 2 * factor
    else:
        raise ValueError(f"maps at offsets {coarse.offset} and {fine.offset} cannot be aligned "
                         f"by a bilinear deconvolution (shift {shift} fine cells)")
    crop = Fraction(kernel - 1, 2) - shift
    assert crop.denominator == 1
    return Upsampling(factor=factor, kernel=kernel, crop=int(crop))
