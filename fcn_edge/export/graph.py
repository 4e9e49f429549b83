"""The module that is traced into ONNX: the FCN plus, optionally, its pre- and post-processing.

``--raw-io`` moves preprocessing into the graph: the artifact takes the N×H×W×3 uint8 BGR frames
OpenCV delivers, and casts, reorders channels, normalises and transposes inside, where an
accelerator does it for free instead of the host's numpy. ``--argmax`` moves the last step of
postprocessing in: N×H×W labels come out instead of N×C×H×W float scores, C times less to copy
back. Both are checked against ``fcn_edge.runtime.processing``, the numpy definition the
runtime uses for plain artifacts.

Models with several inputs (paper §5, RGB-D) take one tensor per modality, in the model's
channel order, concatenated inside the graph; depth and HHA arrive already encoded
(``runtime.modalities``), raw IO only changes the RGB input. Models with several heads give one
output per task, in head order.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..runtime.metadata import input_tensor_name, output_tensor_name
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
        config = model.config
        self.modalities = config.input_names
        self.tasks = tuple(task for task, _ in config.heads)
        counts = [n for _, n in config.heads] or [int(config.num_classes)]
        self.labels_dtypes = [_TORCH_DTYPES[labels_dtype(n)] for n in counts]
        self.input_names = [input_tensor_name(m, raw_io) for m in self.modalities]
        self.output_names = [output_tensor_name(t, argmax) for t in self.tasks] or \
            [output_tensor_name(None, argmax)]

    def forward(self, *inputs: torch.Tensor):
        parts = [self._rgb(x) if m == "rgb" else x for m, x in zip(self.modalities, inputs)]
        scores = self.model(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))
        heads = [scores[t] for t in self.tasks] if self.tasks else [scores]
        if self.argmax:
            # ArgMax gives int64; labels leave the graph as small as they fit.
            heads = [s.argmax(1).to(dtype) for s, dtype in zip(heads, self.labels_dtypes)]
        return heads[0] if len(heads) == 1 else tuple(heads)

    def _rgb(self, x: torch.Tensor) -> torch.Tensor:
        if not self.raw_io:
            return x
        x = x.permute(0, 3, 1, 2).float()
        if self.flip_channels:
            x = x.flip(1)
        return x * self.scale + self.bias
