"""An in-memory ONNX model's ``metadata_props``, where fcn-edge's artifact metadata lives, as a
string → string dict: read (:func:`get_metadata`) and replaced (:func:`set_metadata`).

Files on disk are read by the runtime's ``runtime/onnx_file.py``, which needs no onnx package;
this module serves the exporter's passes over ``ModelProto`` (simplification, int8, the
TensorRT check), which must carry the metadata through unchanged. onnx only, no torch.
"""
from __future__ import annotations

from typing import Mapping

import onnx


def get_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """``metadata_props`` as a dict (the last entry wins for a repeated key, as in ONNX)."""
    return {p.key: p.value for p in model.metadata_props}


def set_metadata(model: onnx.ModelProto, props: Mapping[str, str]) -> None:
    """Replace ``metadata_props`` with ``props`` (string → string), in ``props``' order."""
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
