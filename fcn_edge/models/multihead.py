"""Multi-task heads (paper §5, SIFT Flow): one trunk, one FCN head per task.

The paper's SIFT Flow net is one FCN-16s with two heads — 33 semantic and 3 geometric classes —
"as accurate as two separate models and as fast as one": the trunk, where nearly all the work
is, runs once. Here every head has its own score layers, skip fusion and upsampling (the same
geometry, since it depends only on the trunk and the variant), and ``forward`` returns one score
map per task, by name.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import InputError
from .fcn import FCN


class MultiHeadFCN(nn.Module):
    """An FCN trunk with one head per task (``config.heads``).

    Args:
        build: builds a single-task FCN from a :class:`~fcn_edge.config.ModelConfig`.
        config: the variant, backbone and options shared by every head, and ``heads``.
    """

    def __init__(self, build: Callable, config: ModelConfig) -> None:
        super().__init__()
        if not config.heads:
            raise InputError("MultiHeadFCN needs config.heads, e.g. (('semantic', 33), "
                             "('geometric', 3))")
        self.config = config
        self.heads = dict(config.heads)
        (first, classes), *others = config.heads
        self.fcn: FCN = build(replace(config, heads=(), num_classes=classes))  # trunk + head 1
        names = self.fcn.head_layer_names()
        extra = {}
        for task, count in others:
            donor = build(replace(config, heads=(), num_classes=count))
            extra[task] = nn.ModuleDict({n: getattr(donor, n) for n in names})
        self.extra_heads = nn.ModuleDict(extra)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """N×C×H×W images → {task: N×classes×H×W scores}; the trunk runs once."""
        taps = self.fcn.taps(x)
        first = next(iter(self.heads))
        out = {first: self.fcn.head_scores(taps, x)}
        for task, layers in self.extra_heads.items():
            out[task] = self.fcn.head_scores(taps, x, layers)
        return out
