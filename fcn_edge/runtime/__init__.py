"""The light runtime (issue "Runtime"): ``Segmenter``, backends, pre/post-processing, sources.

It depends only on numpy, OpenCV and the inference engines: importing it must never import
torch (a test asserts this), so an edge box can run exported models without PyTorch. Importing
this package imports nothing at all: each name below loads its module on first use (PEP 562),
so ``import fcn_edge.runtime`` stays instant and an engine (onnxruntime, tensorrt, torch) is
imported only when a backend that needs it opens.

    from fcn_edge.runtime import Segmenter
    seg = Segmenter("model.onnx")      # the fastest backend that runs here
    labels = seg(frame)                # H×W×3 uint8 BGR → H×W labels
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..io import lazy_exports

#: Public name → the submodule that defines it.
_EXPORTS = {
    "Segmenter": "segmenter",
    "SegmenterStats": "segmenter",
    "open_backend": "backends",
    "available_backends": "backends",
    "backend_names": "backends",
    "Backend": "backends",
    "InputSpec": "backends",
    "ArtifactMeta": "metadata",
    "Shapes": "metadata",
    "parse_shapes": "metadata",
}

__all__ = ["ArtifactMeta", "Backend", "InputSpec", "Segmenter", "SegmenterStats", "Shapes",
           "available_backends", "backend_names", "open_backend", "parse_shapes"]

if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from .backends import Backend, InputSpec, available_backends, backend_names, open_backend
    from .metadata import ArtifactMeta, Shapes, parse_shapes
    from .segmenter import Segmenter, SegmenterStats

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
