"""INT8 graphs: ONNX Runtime static quantization to QDQ, calibrated on the caller's images.

Choices (measured on ResNet18 FCN-8s, 16 procedural 128×128 calibration images, 256×256 tests,
ORT 1.31 on an AVX2 CPU without VNNI):

* QDQ format, per-channel symmetric int8 weights (axis 0 for Conv, 1 for ConvTranspose).
* ``target="tensorrt"`` (default): symmetric int8 activations, zero point 0, the only scheme
  TensorRT accepts, and float biases: TensorRT's DequantizeLinear takes 8-bit tensors only, so
  ONNX Runtime's int32-quantized biases would not parse (TensorRT fuses the bias itself). ORT CPU runs it correctly but cannot fuse Conv→Relu→Q (a symmetric range
  keeps the Relu), so it is no faster than fp32 there (256×256, 1 thread: 63 vs 62 ms).
* ``target="cpu"``: asymmetric uint8 activations, so ORT drops the Relus and fuses every conv
  into QLinearConv: 1.6× faster than fp32 (38 vs 62 ms), and slightly more accurate (a ReLU
  output uses all 8 bits instead of 7). ``reduce_range`` (7-bit weights) because AVX2 without
  VNNI sums u8·s8 pairs in int16 and can saturate; it cost nothing measurable here.
* Calibration "percentile" (99.999 %, ORT's default): labels agreed 93.3 % with fp32, against
  92.7 % for MinMax; 99.99 % agreed 94 % but doubled the largest error. "entropy" is accepted
  but equals MinMax in ORT 1.31: quantize_static gives it 128 histogram bins for 128 quantised
  bins, so its KL search has a single candidate.
* ``quant_pre_process`` (ONNX shape inference and ORT's basic optimiser; symbolic shape
  inference cannot follow the dynamic crop arithmetic): torch's exporter feeds identical conv
  biases through Identity nodes, which ORT cannot quantise as int32 biases and then cannot fuse;
  pre-processing removes them (``target="cpu"``: fused convolutions went from 4 of 20 to 20).
  For ``target="tensorrt"`` only the shape inference runs: biases stay float there anyway, and
  the optimiser would fold the labels' int64 → float → uint8 casts into one that TensorRT
  refuses.
* Kept fp32: the input normalisation before the first convolution (a raw-IO model's 0..255
  pixels would keep 7 bits) and the classifier head, from the score layers on (FCN §4.2:
  score_fr, score_pool4/3, the upscore deconvolutions and fuse adds). The head computes C
  channels, under 0.2 % of the work, and its output is the logits whose argmax is the answer:
  quantising them cost 3–4 points of label agreement. (ORT quantises grouped ConvTranspose in
  QDQ but has no fused int8 kernel for it; it would dequantise and run fp32 anyway.) The
  published architectures' FCNHead (``torchvision_fcn.py``) keeps its last 1×1 convolution
  (``classifier.4``, the logits) fp32 for the same reason, and quantizes its 3×3 one, which is
  trunk-sized work (jetson-inference's FCN-ResNet18, random weights, ``fcn-edge bench`` on 4
  procedural 256×512 scenes: labels agree 95.6 % with fp32 against 94.7 % with it quantized;
  BENCHMARKS.md).
* Squeeze-excitation (MobileNetV3) scales stay fp32: ``Mul`` is left out of the quantized
  operators (``QUANTIZED_OPS`` says why); its convolutions, depthwise ones included, are
  quantized like any other.
* Calibration memory: ORT's percentile calibrator keeps every activation of every image before
  building its histograms, so ``bound_memory`` keeps as many images as half the available
  memory holds (``calib_memory.py``); torchvision's FCN-ResNet50 at 512×512 (1.2 GiB each)
  calibrates on 8 of 32 images on a 24 GiB box instead of being killed.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
from onnxruntime.quantization.shape_inference import quant_pre_process

from ..errors import InputError, ModelFormatError
from ..io import atomic_path
from .onnx_props import get_metadata, set_metadata

__all__ = ["CalibrationReader", "INT8_TARGETS", "METHODS", "fp32_nodes", "quantize_int8"]

log = logging.getLogger(__name__)

METHODS = {"percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax,
           "entropy": CalibrationMethod.Entropy}
INT8_TARGETS = ("tensorrt", "cpu")
#: The operators quantized: ONNX Runtime's default set (every operator it has a QDQ or QLinear
#: rule for) but Mul. A calibrated tensor is every float input and output of such an operator,
#: and MobileNetV3's squeeze-excitation multiplies a feature map by a hard sigmoid whose
#: values can all lie within a millionth of 0.5 (an untrained or saturated block): the
#: histogram calibrators then fail ("Too many bins for data range"). Our trunks have no other
#: Mul, so the excitation's scaling stays fp32 and nothing else changes (mobilenet.py).
QUANTIZED_OPS = tuple(sorted((set(QLinearOpsRegistry) | set(QDQRegistry)) - {"Mul"}))
#: Node names of the FCN classifier head (score_fr, score_pool4, upscore2, upscore8, ...).
_HEAD = re.compile(r"(^|/)((up)?score|(aux_)?classifier\.4/)")
#: Spatial axes of the project's two input layouts: NCHW ``images``, NHWC uint8 ``frames``.
_SPATIAL_AXES = {"images": (2, 3), "frames": (1, 2)}


class CalibrationReader(CalibrationDataReader):
    """Calibration feeds for ORT's calibrator, one sample at a time, all cropped to one H×W.

    ``feeds`` are dicts of input name → N×3×H×W float32 ``images`` or N×H×W×3 uint8 ``frames``.
    ORT's histogram calibrators (percentile, entropy) stack every batch's activations into one
    array, so every feed must have the same shape: batches are split into single samples and
    each is centre-cropped to the smallest height and width among them.
    """

    def __init__(self, feeds: Iterable[Mapping[str, np.ndarray]],
                 spatial_axes: Mapping[str, tuple[int, int]] | None = None) -> None:
        axes = dict(_SPATIAL_AXES, **(spatial_axes or {}))
        samples = [{name: np.asarray(a)[i:i + 1] for name, a in feed.items()}
                   for feed in feeds for i in range(_batch_size(feed))]
        if not samples:
            raise InputError("int8 calibration needs at least one image")
        # The smallest height and width of each input with known spatial axes.
        sizes = {name: [min(s[name].shape[a] for s in samples) for a in axes[name]]
                 for name in samples[0] if name in axes}
        self.samples = [{name: _centre_crop(a, axes.get(name, ()), sizes.get(name))
                         for name, a in s.items()} for s in samples]
        self._next: Iterator[dict[str, np.ndarray]] = iter(self.samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._next, None)

    def rewind(self) -> None:
        self._next = iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)


def _batch_size(feed: Mapping[str, np.ndarray]) -> int:
    sizes = {np.asarray(a).shape[0] for a in feed.values()}
    if len(sizes) != 1:
        raise InputError(f"a calibration feed's arrays disagree on the batch size: {sizes}")
    return sizes.pop()


def _centre_crop(array: np.ndarray, axes: tuple[int, ...], size: list[int] | None
                 ) -> np.ndarray:
    if size is None:
        return np.ascontiguousarray(array)
    index = [slice(None)] * array.ndim
    for axis, length in zip(axes, size):
        start = (array.shape[axis] - length) // 2
        index[axis] = slice(start, start + length)
    return np.ascontiguousarray(array[tuple(index)])


def bound_memory(reader: CalibrationReader, model: onnx.ModelProto | str | os.PathLike,
                 log=print, budget: int | None = None) -> CalibrationReader:
    """Keep as many of ``reader``'s samples as ORT's calibrator can hold (``calib_memory.py``:
    it keeps every activation of every sample), cropping them when even one is too big;
    ``budget`` defaults to half the memory available now. Says what it did in one line."""
    from .calib_memory import BUDGET_SHARE, activation_bytes, available_bytes, fit_calibration

    first = reader.samples[0]
    name = next(n for n in first if n in _SPATIAL_AXES)
    size = tuple(first[name].shape[a] for a in _SPATIAL_AXES[name])
    budget = budget if budget is not None else int(available_bytes() * BUDGET_SHARE)
    count, crop, message = fit_calibration(
        reader.samples, size, lambda h, w: activation_bytes(model, h, w), budget)
    if message is None:
        return reader
    log(message)
    samples = reader.samples[:count]
    if crop is not None:
        samples = [{n: _centre_crop(a, _SPATIAL_AXES.get(n, ()), list(crop) if n in
                                    _SPATIAL_AXES else None) for n, a in s.items()}
                   for s in samples]
    reader.samples = samples
    reader.rewind()
    return reader


def fp32_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes left fp32: everything before the first convolution (input
    normalisation, shape arithmetic) and the head from the first score layer on."""
    trunk: set[str] = set()   # tensors from the first Conv on
    head: set[str] = set()    # tensors from the score layers on
    names = []
    for node in model.graph.node:
        if _HEAD.search(node.name) or head.intersection(node.input):
            head.update(node.output)
            names.append(node.name)
        elif node.op_type == "Conv" or trunk.intersection(node.input):
            trunk.update(node.output)
        else:
            names.append(node.name)
    return names


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                  calibration: Iterable[Mapping[str, np.ndarray]], method: str = "percentile",
                  target: str = "tensorrt") -> Path:
    """Write the QDQ int8 form of the model at ``fp32_path`` to ``out_path`` (atomically).

    ``calibration``: feed dicts of representative inputs, in the model's own input form
    (normalised ``images`` or raw ``frames``); a few dozen images are plenty. ``method`` is one
    of :data:`METHODS`, ``target`` one of :data:`INT8_TARGETS` (see the module docstring). The
    result keeps the source's ``metadata_props`` exactly; the caller updates "precision".
    """
    source = Path(fp32_path)
    if method not in METHODS:
        raise InputError(f"calibration method must be one of {', '.join(METHODS)}, not {method!r}")
    if target not in INT8_TARGETS:
        raise InputError(f"int8 target must be one of {', '.join(INT8_TARGETS)}, not {target!r}")
    if not source.is_file():
        raise InputError(f"{source}: no such model file")
    reader = calibration if isinstance(calibration, CalibrationReader) \
        else CalibrationReader(calibration)
    header = onnx.load(source, load_external_data=False)
    inputs = {v.name for v in header.graph.input} - {t.name for t in header.graph.initializer}
    if set(reader.samples[0]) != inputs:
        raise InputError(f"calibration feeds give {sorted(reader.samples[0])}, but the model "
                         f"takes {sorted(inputs)}")
    props = get_metadata(header)
    # Every file ORT writes on the way (pre-processed model, "-inferred" copy, augmented
    # calibration model) goes to this directory, which is removed whatever happens.
    with tempfile.TemporaryDirectory(prefix="fcn-edge-int8-") as work:
        prepared = _prepare(source, Path(work), optimize=target == "cpu")
        with atomic_path(out_path) as tmp:
            _quantize(prepared, tmp, reader, method, target)
            _restore_metadata(tmp, props)
    return Path(out_path)


def _prepare(source: Path, work: Path, optimize: bool) -> Path:
    """Pre-process into ``work`` and name every node (ORT excludes nodes by name).

    ``optimize`` runs ONNX Runtime's basic optimiser, which helps ORT's own CPU kernels; for
    TensorRT it is skipped: it folds the labels' Cast(int64 → float) → Cast(float → uint8)
    into one Cast(int64 → uint8), which TensorRT refuses (TensorRT does its own fusing)."""
    prepared = work / "prepared.onnx"
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True,
                          skip_optimization=not optimize)
    except Exception as error:   # onnx and ORT raise many kinds; all mean "cannot read it"
        raise ModelFormatError(f"{source}: int8 pre-processing failed: {error}") from error
    model = onnx.load(prepared)
    for k, node in enumerate(model.graph.node):
        node.name = node.name or f"fcn_edge_node_{k}"
    onnx.save(model, prepared)
    return prepared


def _quantize(prepared: Path, out: Path, reader: CalibrationReader, method: str,
              target: str) -> None:
    symmetric = target == "tensorrt"
    exclude = fp32_nodes(onnx.load(prepared, load_external_data=False))
    reader.rewind()
    # ORT's histogram calibrators print progress to stdout; keep the CLI's output clean.
    with contextlib.redirect_stdout(io.StringIO()) as chatter:
        quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=not symmetric,
                        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                        op_types_to_quantize=list(QUANTIZED_OPS),
                        calibrate_method=METHODS[method],
                        extra_options={"ActivationSymmetric": symmetric,
                                       "WeightSymmetric": True,
                                       # TensorRT dequantizes 8-bit tensors only: an int32
                                       # bias's DequantizeLinear does not parse (trt_compat).
                                       "QuantizeBias": not symmetric})
    log.debug("%s", chatter.getvalue())


def _restore_metadata(path: Path, props: Mapping[str, str]) -> None:
    """ORT replaces metadata_props with its own markers; put the source's back, exactly."""
    model = onnx.load(path)
    set_metadata(model, props)
    onnx.save(model, path)
