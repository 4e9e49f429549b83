"""Run an fp16 model with real fp16 arithmetic on the export machine, and check its outputs.

ONNX Runtime's CPU provider never refuses an fp16 graph: where it has no fp16 kernel, its
InsertCastTransformer wraps the node in casts and computes it in fp32. ORT 1.31 on x86 has fp16
kernels for data movement (Transpose, Concat, Slice, Identity) and Max/Clip, but not for Conv,
ConvTranspose, Add, Relu or MaxPool, i.e. every op of an FCN. Such a run stores fp16 but
computes fp32, so it cannot show fp16 overflow. :func:`run_fp16` therefore uses ORT only when
ORT keeps every node in fp16, and otherwise ``onnx.reference.ReferenceEvaluator``: numpy
arithmetic on float16 arrays.

The reference Conv and ConvTranspose are slow (numpy has no fp16 BLAS and the reference col2im
loops in Python: ResNet18 FCN-8s at 128×128 took 8–10 s here, 0.8–1.1 s with these). They are
replaced by vectorised versions with the same arithmetic: fp16 operands, products summed in fp32 (exact: an fp16×fp16
product fits fp32; numpy's own float16 matmul sums in fp32 too, as GPU tensor cores do), each
result rounded to fp16, bias and overlapping ConvTranspose taps added in fp16.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
from onnx.reference.ops.op_conv import Conv as _ReferenceConv
from onnx.reference.ops.op_conv import _conv_implementation
from onnx.reference.ops.op_conv_transpose import ConvTranspose as _ReferenceConvTranspose

from ..errors import BackendUnavailable, InputError, ModelFormatError

__all__ = ["EXECUTORS", "check_finite", "ort_fp32_fallbacks", "run_fp16"]

EXECUTORS = ("auto", "onnxruntime", "reference")


def run_fp16(model: str | os.PathLike | bytes | onnx.ModelProto,
             feeds: Mapping[str, np.ndarray], executor: str = "auto"
             ) -> tuple[dict[str, np.ndarray], str]:
    """Run ``model`` on ``feeds``; return its outputs by name and the executor that ran it.

    ``executor``: "onnxruntime" (refused with BackendUnavailable where ORT would compute some
    node in fp32), "reference", or "auto" (ORT when it can, else the reference evaluator).
    The name returned is "onnxruntime" or "onnx.reference".
    """
    if executor not in EXECUTORS:
        raise InputError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    data = _model_bytes(model)
    if executor != "reference":
        try:
            session, fallbacks = _ort_session(data)
        except BackendUnavailable:
            if executor == "onnxruntime":
                raise
        else:
            if not fallbacks:
                names = [o.name for o in session.get_outputs()]
                return dict(zip(names, session.run(names, dict(feeds)))), "onnxruntime"
            if executor == "onnxruntime":
                raise BackendUnavailable(f"ONNX Runtime's CPU provider has no fp16 kernel for "
                                         f"{', '.join(fallbacks)}: it would compute them in fp32")
    evaluator = ReferenceEvaluator(data, new_ops=[Conv, ConvTranspose])
    names = list(evaluator.output_names)
    with np.errstate(over="ignore", invalid="ignore"):   # check_finite reports overflow
        outputs = evaluator.run(names, dict(feeds))
    return dict(zip(names, outputs)), "onnx.reference"


def ort_fp32_fallbacks(model: str | os.PathLike | bytes | onnx.ModelProto) -> list[str]:
    """The op types ONNX Runtime's CPU provider would compute in fp32 (it inserts casts)."""
    return _ort_session(_model_bytes(model))[1]


def check_finite(outputs: Mapping[str, np.ndarray]) -> None:
    """Raise ModelFormatError naming each float output with NaN or infinite values."""
    problems = []
    for name, value in outputs.items():
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.floating):
            continue
        nan, inf = int(np.isnan(value).sum()), int(np.isinf(value).sum())
        if nan or inf:
            problems.append(f"{name!r} has {nan + inf} non-finite values of {value.size} "
                            f"({nan} NaN, {inf} inf)")
    if problems:
        raise ModelFormatError("; ".join(problems) + ": the model overflows in this precision "
                               "(keep the offending ops fp32: export --fp16 --keep-fp32 "
                               "OPS, or export fp32)")


def _model_bytes(model: str | os.PathLike | bytes | onnx.ModelProto) -> bytes:
    if isinstance(model, bytes):
        return model
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    path = Path(model)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    return path.read_bytes()


def _ort_session(data: bytes):
    """An ORT CPU session on ``data`` and the op types its InsertCastTransformer moved to fp32.

    Optimisations are off so that the saved graph is the source plus ORT's casts: any Cast it
    did not have marks a node ORT computes in fp32.
    """
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime") \
            from error
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3   # ORT warns about every cast it inserts
    with tempfile.TemporaryDirectory(prefix="fcn-edge-ort-") as tmp:
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        try:
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as error:   # ORT raises its own pybind classes: NotImplemented, Fail…
            raise BackendUnavailable(f"ONNX Runtime cannot run this model: {error}") from error
        optimized = onnx.load(options.optimized_model_filepath)
    source = onnx.load_from_string(data)
    own_casts = {n.name for n in source.graph.node if n.op_type == "Cast"}
    inserted = {o for n in optimized.graph.node if n.op_type == "Cast" and n.name not in own_casts
                for o in n.output}
    fallbacks = {n.op_type for n in optimized.graph.node
                 if n.op_type != "Cast" and inserted.intersection(n.input)}
    return session, sorted(fallbacks)


# ---- fast reference kernels with fp16 arithmetic --------------------------------------------

def _matmul_fp16(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """fp16 @ fp16 with an fp32 sum, rounded to fp16 (what ``a @ b`` does in numpy, 15× faster)."""
    return np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(np.float16)


class Conv(_ReferenceConv):
    """The reference Conv; float16 inputs go through :func:`_matmul_fp16`."""

    op_domain = ""

    def _run(self, X, W, B=None, auto_pad=None, dilations=None, group=None, kernel_shape=None,
             pads=None, strides=None):
        if X.dtype != np.float16:
            return super()._run(X, W, B, auto_pad, dilations, group, kernel_shape, pads, strides)
        # The reference im2col moves fp16 values exactly; its matmul is the slow part, so it
        # runs on fp32 copies (exact products, fp32 sum, as numpy's fp16 matmul) then rounds.
        y = _conv_implementation(X.astype(np.float32), W.astype(np.float32), None, auto_pad,
                                 dilations, group or 1, kernel_shape, pads, strides)
        y = y.astype(np.float16)
        if B is not None:
            y += B.astype(np.float16).reshape((1, -1) + (1,) * (y.ndim - 2))
        return (y,)


class ConvTranspose(_ReferenceConvTranspose):
    """The reference ConvTranspose; 2-D float16 inputs without dilation, output_shape or
    auto_pad take a vectorised col2im (and get the right bias per group, which the reference
    implementation of onnx 1.23 gives only to group 0)."""

    op_domain = ""

    def _run(self, X, W, B=None, auto_pad=None, dilations=None, group=None, kernel_shape=None,
             output_padding=None, output_shape=None, pads=None, strides=None):
        simple = (X.dtype == np.float16 and X.ndim == 4 and output_shape is None
                  and auto_pad in (None, "NOTSET") and all(d == 1 for d in dilations or (1, 1)))
        if not simple:
            return super()._run(X, W, B, auto_pad, dilations, group, kernel_shape,
                                output_padding, output_shape, pads, strides)
        group, (sh, sw) = group or 1, strides or (1, 1)
        pads, extra = pads or (0, 0, 0, 0), output_padding or (0, 0)
        n, c, h, w = X.shape
        _, m, kh, kw = W.shape          # C × M/group × kh × kw
        full = np.zeros((n, m * group, (h - 1) * sh + kh + extra[0],
                         (w - 1) * sw + kw + extra[1]), np.float16)
        for g in range(group):
            x = X[:, g * c // group:(g + 1) * c // group].reshape(n, c // group, h * w)
            wg = W[g * c // group:(g + 1) * c // group].reshape(c // group, m * kh * kw)
            cols = _matmul_fp16(wg.T[None], x).reshape(n, m, kh, kw, h, w)
            out = full[:, g * m:(g + 1) * m]
            for i in range(kh):      # col2im: each tap adds one strided plane, in fp16
                for j in range(kw):
                    out[:, :, i:i + sh * h:sh, j:j + sw * w:sw] += cols[:, :, i, j]
        y = full[:, :, pads[0]:full.shape[2] - pads[2], pads[1]:full.shape[3] - pads[3]]
        if B is not None:
            y = y + B.astype(np.float16).reshape(1, -1, 1, 1)
        return (np.ascontiguousarray(y),)
