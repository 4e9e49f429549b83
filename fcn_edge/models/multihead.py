"""Multi-task heads (paper §5, SIFT Flow): one trunk, one FCN head per task.

The paper's SIFT Flow net is one FCN-16s with two heads — 33 semantic and 3 geometric classes —
"as accurate as two separate models and as fast as one": the trunk, where nearly all the work
is, runs once. Here every head has its own score layers, skip fusion and upsampling (the same
geometry, since it depends only on the trunk and the variant), and ``forward`` returns one score
map per task, by name.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Mapping

import torch
from torch import nn

from ..errors import InputError
from .fcn import FCN


class MultiHeadFCN(nn.Module):
    """An FCN trunk with one head per task.

    Args:
        build: builds an FCN from a :class:`~fcn_edge.config.ModelConfig` (``models.build``).
        config: the variant, backbone and options shared by every head (its ``num_classes`` is
            ignored).
        heads: task name → number of classes, e.g. ``{"semantic": 33, "geometric": 3}``.
    """

    def __init__(self, build: Callable, config, heads: Mapping[str, int]) -> None:
        super().__init__()
        heads = dict(heads)
        if len(heads) < 2:
            raise InputError("a multi-head model needs at least two heads; for one task use "
                             "create_model(num_classes=...)")
        bad = {k: v for k, v in heads.items() if not (isinstance(v, int) and v >= 1)}
        if bad or not all(isinstance(k, str) and k.isidentifier() for k in heads):
            raise InputError(f"heads maps task names (identifiers) to class counts ≥ 1, got "
                             f"{heads}")
        self.heads = heads
        first, *others = heads
        self.fcn: FCN = build(replace(config, num_classes=heads[first]))  # trunk + first head
        names = self.fcn.head_layer_names()
        extra = {}
        for task in others:
            donor = build(replace(config, num_classes=heads[task]))
            extra[task] = nn.ModuleDict({n: getattr(donor, n) for n in names})
        self.extra_heads = nn.ModuleDict(extra)
        self.config = self.fcn.config

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """N×C×H×W images → {task: N×classes×H×W scores}; the trunk runs once."""
        taps = self.fcn.taps(x)
        first = next(iter(self.heads))
        out = {first: self.fcn.head_scores(taps, x)}
        for task, layers in self.extra_heads.items():
            out[task] = self.fcn.head_scores(taps, x, layers)
        return out
