"""Extra input channels (paper §5, NYUDv2 "early fusion": RGB-D as a 4-channel input).

An RGB-trained first convolution is extended to ``N > 3`` channels by one documented rule:

    W'[:, :3] = W · 3/N          (the RGB filters, rescaled)
    W'[:, c]  = mean_rgb(W) · 3/N   for every extra channel c

so that a grey image whose extra channels carry the same grey value gives *exactly* the
RGB net's response (3·mean(W)·g·3/N + (N−3)·mean(W)·g·3/N = 3·mean(W)·g), and an extra channel
starts out seen as luminance — the network then learns what depth adds. The paper trains the RGB
net first and then moves to RGB-D; this is how its first layer is carried over. The same rule as
timm's ``adapt_input_conv`` family: activation scale is kept, no channel starts dead.
"""
from __future__ import annotations

from typing import Mapping

import torch

from ..errors import WeightsMismatchError
from .registry import get_backbone


def extend_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """``weight`` (O×C×k×k) widened to ``in_channels`` ≥ C input channels by the module's rule."""
    channels = weight.shape[1]
    if in_channels < channels:
        raise WeightsMismatchError(f"the first convolution of the file takes {channels} channels; "
                                   f"a model with {in_channels} cannot drop some of them — build "
                                   f"it with in_channels={channels}")
    if in_channels == channels:
        return weight
    extra = weight.mean(dim=1, keepdim=True).expand(-1, in_channels - channels, -1, -1)
    return torch.cat([weight, extra], dim=1) * (channels / in_channels)


def adapt_first_conv(state: Mapping[str, torch.Tensor], backbone: str,
                     target: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """``state`` with its first convolution widened to ``target``'s input channels when the file
    has fewer; ``(state, adapted)``. Any other difference is left for the loader to report."""
    key = get_backbone(backbone).first_conv
    out = dict(state)
    source, wanted = state.get(key), target.get(key)
    if source is None or wanted is None or source.ndim != 4 or source.shape == wanted.shape:
        return out, False
    same_filters = source.shape[0] == wanted.shape[0] and source.shape[2:] == wanted.shape[2:]
    if not same_filters or source.shape[1] > wanted.shape[1]:
        return out, False
    out[key] = extend_input_conv(source, wanted.shape[1])
    return out, True
