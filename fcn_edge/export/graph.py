"""The module that is traced into ONNX: the FCN plus, optionally, its pre- and post-processing.

``--raw-io`` moves preprocessing into the graph: the artifact takes the N×H×W×3 uint8 BGR frames
OpenCV delivers, and casts, reorders channels, normalises and transposes inside, where an
accelerator does it for free instead of the host's numpy. ``--argmax`` moves the last step of
postprocessing in: N×H×W labels come out instead of N×C×H×W float scores, C times less to copy
back. Both are checked against ``fcn_edge.runtime.processing``, the numpy definition the
runtime uses for plain artifacts.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..runtime.processing import labels_dtype, normalization_affine

_TORCH_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.int32): torch.int32}


class DeployGraph(nn.Module):
    """``model`` wrapped with in-graph preprocessing (``raw_io``) and argmax (``argmax``)."""

    def __init__(self, model: nn.Module, *, raw_io: bool = False, argmax: bool = False,
                 mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), color_order: str = "rgb") -> None:
        super().__init__()
        self.model, self.raw_io, self.argmax = model, raw_io, argmax
        self.flip_channels = color_order == "rgb"  # frames arrive BGR
        scale, bias = normalization_affine(mean, std)
        self.register_buffer("scale", torch.from_numpy(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("bias", torch.from_numpy(bias).view(1, 3, 1, 1), persistent=False)
        num_classes = int(model.config.num_classes)
        self.labels_dtype = _TORCH_DTYPES[labels_dtype(num_classes)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.raw_io:
            x = x.permute(0, 3, 1, 2).float()
            if self.flip_channels:
                x = x.flip(1)
            x = x * self.scale + self.bias
        scores = self.model(x)
        if self.argmax:
            # ArgMax gives int64; labels leave the graph as small as they fit.
            return scores.argmax(1).to(self.labels_dtype)
        return scores
