"""Late fusion (paper §5, NYUDv2): two FCN streams on different inputs, their scores summed.

The paper's best NYUDv2 net is an RGB FCN and an HHA FCN (depth encoded as horizontal
disparity, height above ground and angle with gravity) trained as one, the two final score maps
added before the loss. :class:`LateFusionFCN` takes the streams' inputs stacked along channels
(e.g. N×(3+3)×H×W for RGB and HHA), so the fused model is still one tensor in, one score map
out — the shape every trainer, exporter and runtime here already handles. Summing after each
stream's own (linear) upsampling equals upsampling the summed coarse scores: the streams keep
their own skips and geometry.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import InputError
from .fcn import FCN


class LateFusionFCN(nn.Module):
    """Streams of FCNs over consecutive channel groups of one input; scores summed.

    Args:
        streams: the FCNs, e.g. ``[rgb_fcn, hha_fcn]``; each takes its own ``in_channels``
            and all predict the same number of classes.
        names: one name per stream (default ``stream0``, ``stream1`` …), for its weights' keys.
        config: the whole model's config (``fusion="late"``), when built from one by
            ``fcn_edge.models.build``; it lets checkpoints and exports describe the model.
    """

    def __init__(self, streams: Sequence[FCN], names: Sequence[str] | None = None,
                 config: ModelConfig | None = None) -> None:
        super().__init__()
        if len(streams) < 2:
            raise InputError("late fusion needs at least two streams")
        classes = {s.config.num_classes for s in streams}
        if len(classes) != 1:
            raise InputError(f"late fusion sums scores: every stream must predict the same "
                             f"classes, got {sorted(classes)}")
        names = list(names) if names is not None else [f"stream{i}" for i in range(len(streams))]
        if len(names) != len(streams) or len(set(names)) != len(names):
            raise InputError(f"give one distinct name per stream, got {names}")
        self.names = tuple(names)
        self.streams = nn.ModuleDict(dict(zip(names, streams)))
        self.channels = tuple(s.config.in_channels for s in streams)
        self.num_classes = classes.pop()
        self.in_channels = sum(self.channels)
        if config is not None:
            self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise InputError(f"expected N×{self.in_channels}×H×W (the streams' inputs "
                             f"{' + '.join(map(str, self.channels))} stacked along channels), "
                             f"got shape {tuple(x.shape)}")
        parts = torch.split(x, self.channels, dim=1)
        scores = [stream(part) for stream, part in zip(self.streams.values(), parts)]
        return torch.stack(scores).sum(dim=0)

    def stream_scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each stream's own scores, by name (to see what each modality contributes)."""
        parts = torch.split(x, self.channels, dim=1)
        return {name: stream(part) for (name, stream), part in
                zip(self.streams.items(), parts)}
