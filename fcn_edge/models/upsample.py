"""In-network upsampling: deconvolution initialised to bilinear interpolation (paper §3.3).

"Upsampling is backwards strided convolution": a stride-f ConvTranspose2d whose kernel is the
bilinear interpolation filter upsamples exactly as bilinear interpolation does. The reference
implementation keeps these kernels fixed (learning rate 0); ``learnable=True`` lets them train,
as the paper describes for the final layer.
"""
from __future__ import annotations

import numpy as np
import torch
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
