"""How the runtime's PyTorch backend opens a checkpoint: the model code loads it, and the
exporter's :func:`~fcn_edge.export.artifact_meta.artifact_meta` describes it as its export
would, so a checkpoint runs behind the same Backend protocol as an ONNX or an engine.

The runtime never imports models or export (``tests/test_layers.py``): importing this module
registers :func:`load_checkpoint` with it, and the runtime's torch backend imports this module
by name (``runtime/backends/torch.py``, ``LOADER_MODULE``) the first time a checkpoint opens.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models import load_model
from ..runtime.backends.torch import register_checkpoint_loader
from ..runtime.metadata import ArtifactMeta
from .artifact_meta import artifact_meta


def load_checkpoint(path: Path, device: str, argmax: bool, fp16: bool
                    ) -> tuple[Any, ArtifactMeta]:
    """The model in eval mode on ``device``, and the metadata its export would carry."""
    model = load_model(path).eval()
    meta = artifact_meta(model, path, raw_io=False, argmax=argmax, shapes=None,
                         options={"backend": f"torch:{device}"})
    return model.to(device), meta.with_(precision="fp16" if fp16 else "fp32")


register_checkpoint_loader(load_checkpoint)
