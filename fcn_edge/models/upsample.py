"""In-network upsampling: deconvolution initialised to bilinear interpolation (paper §3.3).

"Upsampling is backwards strided convolution": a stride-f ConvTranspose2d whose kernel is the
bilinear interpolation filter upsamples exactly as bilinear interpolation does. The reference
implementation keeps these kernels fixed (learning rate 0); ``learnable=True`` lets them train,
as the paper describes for the final layer.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .geometry import Upsampling


def bilinear_kernel(size: int) -> np.ndarray:
    """The ``size × size`` bilinear interpolation filter.

    The upsampling factor is ``ceil(size / 2)``; an even size centres the kernel between two
    pixels (cells that fall half-way between output pixels), an odd size on a pixel.
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"kernel size must be an integer ≥ 1, got {size!r}")
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1.0 - np.abs(np.arange(size) - centre) / factor
    return np.outer(taps, taps).astype(np.float32)


def bilinear_deconv(channels: int, plan: Upsampling, learnable: bool = False) -> nn.ConvTranspose2d:
    """A channel-wise bilinear ConvTranspose2d (no bias) for ``plan``.

    Each class channel is upsampled on its own, so the layer is depthwise (``groups=channels``,
    weight C×1×k×k). The released reference nets store the same kernels as a C×C×k×k tensor
    that is zero off the diagonal: C times the memory and multiply-adds for the same output
    (4 G parameters for a 1000-class FCN-32s). ``loading.py`` converts between the two.
    """
    deconv = nn.ConvTranspose2d(channels, channels, plan.kernel, stride=plan.factor,
                                groups=channels, bias=False)
    kernel = torch.from_numpy(bilinear_kernel(plan.kernel))
    with torch.no_grad():
        deconv.weight.copy_(kernel.expand_as(deconv.weight))
    deconv.weight.requires_grad_(learnable)
    return deconv


def crop_like(x: torch.Tensor, ref: torch.Tensor, offset: int) -> torch.Tensor:
    """``x[..., offset:offset+H, offset:offset+W]`` with H×W taken from ``ref``.

    Sizes are read from the tensor so that an exported graph keeps height and width dynamic.
    """
    h, w = ref.shape[-2], ref.shape[-1]
    return x[:, :, offset:offset + h, offset:offset + w]


def fuse(upsampled: torch.Tensor, skip: torch.Tensor, crop: int) -> torch.Tensor:
    """Sum an upsampled coarse score map with a finer skip score map, aligned by ``crop``.

    ``crop`` ≥ 0 crops the upsampled map to the skip map (edge layout); ``crop`` < 0 crops the
    skip map to the upsampled one (the reference nets, whose padding makes the skip map larger).
    """
    if crop >= 0:
        return crop_like(upsampled, skip, crop) + skip
    return upsampled + crop_like(skip, upsampled, -crop)


class _GridUpsample(torch.autograd.Function):
    """The edge layout's final upsampling when its cells sit on the output's pixel grid (cell
    ``i`` at pixel ``f·i``): pixel ``q`` is the scores linearly interpolated at cell ``q / f``,
    clamped to the outer cells. In PyTorch it runs the bilinear deconvolution itself (so the
    numbers are the model's); in an ONNX export it becomes one ``Resize`` (linear,
    ``asymmetric`` coordinates: exactly that map), which TensorRT supports and ONNX Runtime's
    CPU runs in 0.95 ms where the grouped ConvTranspose took 7.1 ms (18 % of FCN-8s
    MobileNetV3-Large at 256×512; `fcn-edge bench --profile`, BENCHMARKS.md)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, deconv_weight: torch.Tensor, factor: int,
                crop: int) -> torch.Tensor:
        up = F.conv_transpose2d(_replicate(scores), deconv_weight, stride=factor,
                                groups=scores.shape[1])
        return _on_grid(up, scores, factor, crop)

    @staticmethod
    def symbolic(g, scores, deconv_weight, factor: int, crop: int):
        roi = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
        scales = g.op("Constant", value_t=torch.tensor([1.0, 1.0, factor, factor]))
        return g.op("Resize", scores, roi, scales, mode_s="linear",
                    coordinate_transformation_mode_s="asymmetric")


def grid_upsample(scores: torch.Tensor, deconv: nn.ConvTranspose2d, crop: int) -> torch.Tensor:
    """``deconv`` on ``scores`` replicated by one cell, cropped so that output pixel ``f·i`` is
    cell ``i``: N×C×(h·f)×(w·f). Exported as a Resize (``_GridUpsample``) only while its
    kernel is still the bilinear one: weights loaded or edited into it keep the
    deconvolution, so the exported graph always computes what the model does."""
    if torch.onnx.is_in_onnx_export() and _is_bilinear(deconv.weight):
        return _GridUpsample.apply(scores, deconv.weight, deconv.stride[0], crop)
    return _on_grid(deconv(_replicate(scores)), scores, deconv.stride[0], crop)


def _replicate(scores: torch.Tensor) -> torch.Tensor:
    return F.pad(scores, (1, 1, 1, 1), mode="replicate")


def _on_grid(up: torch.Tensor, scores: torch.Tensor, factor: int, crop: int) -> torch.Tensor:
    h, w = scores.shape[-2] * factor, scores.shape[-1] * factor
    return up[:, :, crop:crop + h, crop:crop + w]


def _is_bilinear(weight: torch.Tensor) -> bool:
    # Called while the exporter traces: the weights are fixed for this export, so the answer
    # is one branch of the graph, rightly; the tracer's warnings about it say nothing here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        kernel = torch.from_numpy(bilinear_kernel(int(weight.shape[-1]))).to(weight)
        return bool(torch.equal(weight, kernel.expand_as(weight)))
