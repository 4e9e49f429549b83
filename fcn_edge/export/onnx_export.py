"""Trace an FCN into ONNX with dynamic batch, height and width, check it, and simplify it.

We use PyTorch's TorchScript-based exporter (``dynamo=False``). The FCN is a static graph whose
only size-dependent arithmetic (the crops, the AlexNet minimum-size pad) is written to trace
exactly (``models/padding.py``), and this exporter needs nothing beyond torch and onnx; the
dynamo exporter would add onnxscript and torch.export's symbolic-shape guards for no gain here.
Every export is checked: ``onnx.checker`` with ``full_check`` (which runs strict shape
inference), and again after simplification; numerical parity is ``parity.py``'s job.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from ..errors import InputError, ModelFormatError
from ..io import atomic_path
from .graph import DeployGraph
from .onnx_props import get_metadata, set_metadata

MIN_OPSET, MAX_OPSET, DEFAULT_OPSET = 17, 20, 17  # 20: the TorchScript exporter's newest

#: Warnings of the tracer that do not apply to our graph, each for a checked reason.
_EXPECTED_WARNINGS = (
    "You are using the legacy TorchScript-based ONNX export",   # chosen: see module docstring
    "The feature will be removed",
    "Converting a tensor to a Python boolean",   # FCN's input check (ndim, channels): static
    "Constant folding - Only steps=1",           # the channel flip's step -1 Slice stays a node
)


def trace_to_onnx(graph: DeployGraph, *, opset: int = DEFAULT_OPSET,
                  example_size: tuple[int, int] = (64, 64)) -> onnx.ModelProto:
    """Export ``graph`` with dynamic N, H, W; returns the checked model (not yet saved)."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise InputError(f"--opset {opset}: fcn-edge exports opset {MIN_OPSET}–{MAX_OPSET} "
                         f"(≥ 17 for TensorRT 10's parser; ≤ {MAX_OPSET} for PyTorch's exporter)")
    graph = graph.eval().float().cpu()
    h, w = example_size
    channels = dict(graph.model.config.inputs)
    examples, axes = [], {}
    for modality, name in zip(graph.modalities, graph.input_names):
        if modality == "rgb" and graph.raw_io:
            examples.append(torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8))
            axes[name] = {0: "batch", 1: "height", 2: "width"}
        else:
            examples.append(torch.randn(1, channels[modality], h, w))
            axes[name] = {0: "batch", 2: "height", 3: "width"}
    for name in graph.output_names:
        axes[name] = {0: "batch", 1: "height", 2: "width"} if graph.argmax else {
            0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        for message in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=f".*{message}")
        with torch.no_grad():
            torch.onnx.export(graph, tuple(examples), buffer, dynamo=False, opset_version=opset,
                              input_names=graph.input_names, output_names=graph.output_names,
                              dynamic_axes=axes, do_constant_folding=True)
    model = onnx.load_from_string(buffer.getvalue())
    check_model(model)
    return model


def check_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """``onnx.checker`` full check (strict shape inference included); returns the model with
    inferred shapes. A failure is a ModelFormatError naming the checker's complaint."""
    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelFormatError(f"the exported ONNX graph does not pass onnx's checker: "
                               f"{str(exc).splitlines()[0]}") from None


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants and fuse what onnxslim can, keeping metadata; checked again after."""
    try:
        import onnxslim
    except ImportError:  # optional: the unsimplified graph is correct, only larger
        warnings.warn("onnxslim is not installed; the ONNX graph is left unsimplified "
                      "(pip install onnxslim)", stacklevel=2)
        return model
    props = get_metadata(model)
    slim = onnxslim.slim(model)
    if slim is None:
        raise ModelFormatError("onnxslim failed to simplify the graph; export with --no-simplify")
    set_metadata(slim, props)
    return check_model(slim)


def save_onnx(model: onnx.ModelProto, path: Path) -> Path:
    """Write atomically: an interrupted export never leaves a half-written model."""
    if model.ByteSize() >= 2**31 - 1:
        raise ModelFormatError("the model exceeds protobuf's 2 GB limit for one ONNX file")
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return path


def build_graph(model: nn.Module, meta, *, raw_io: bool, argmax: bool,
                labels_dtype: str = "auto") -> DeployGraph:
    """``DeployGraph`` with the artifact's normalisation (see ``graph.py``)."""
    return DeployGraph(model, raw_io=raw_io, argmax=argmax, mean=meta.mean, std=meta.std,
                       labels_dtype=labels_dtype,
                       color_order=meta.color_order)
