"""The ``gate`` section of benchmarks/gpu_check.py: the TensorRT build's accuracy gate
(fcn_edge/export/trt_gate.py) on the device, with PyTorch in the engine's place.

``fcn-edge build`` runs every new engine against ONNX Runtime (CPU) on the same ONNX, at the
profile's min/opt/max shapes, before it caches or writes it. TensorRT is not at hand here, so
the engine is FCN-8s ResNet18 (the latency section's model) in PyTorch on the ``--device``: fp16
on a CUDA GPU, judged by the fp16 bound, as an FP16 engine of the fp32 ONNX would be; on
``--device cpu`` fp32 on the CPU, the stand-in, judged by the fp32 bound. Everything else is the
gate's own code: the frames, the comparison, the verdict, the header figures. A failed gate is
a recorded result (``passed`` false, its failures listed), not a failed section.
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import torch

from gpu_check_models import create_fcn8s, random_scores
from gpu_check_runner import Context, attempt, raise_failures

#: The profiles the gate runs (NxHxW MIN:OPT:MAX): a camera's range, and tiny ones for --quick.
SHAPES, QUICK_SHAPES = "1x256x512:2x512x1024:2x1024x2048", "1x32x32:2x48x64:2x64x96"
IMAGE_SIZE = (64, 64)  # the checkpoint's training size: the export's one parity size


def gate(ctx: Context, record: dict) -> None:
    """Export FCN-8s ResNet18 to an fp32 ONNX, then run the gate: PyTorch on the device against
    ONNX Runtime on the CPU, every output at every shape of the profile."""
    cuda = ctx.device == "cuda"
    shapes = QUICK_SHAPES if ctx.quick else SHAPES
    record.update(device=ctx.device, model="fcn8s resnet18, 21 classes, eval, fp32 ONNX",
                  engine=("PyTorch fp16 on the GPU (weights and input .half()), in TensorRT's "
                          "place" if cuda else "PyTorch fp32 on the CPU, the stand-in for the "
                          "GPU's fp16"),
                  reference="ONNX Runtime CPU on the same ONNX (trt_gate.reference_backend)",
                  shapes=f"{shapes} (N×H×W, the ONNX's profile)", frames="procedural scenes")
    results = record.setdefault("results", {})
    with tempfile.TemporaryDirectory() as folder:
        attempt(ctx, results, "fcn8s resnet18",
                lambda: _gate_run(ctx, Path(folder), shapes, "fp16" if cuda else "fp32"))
    raise_failures(results)


def _gate_run(ctx: Context, folder: Path, shapes: str, precision: str) -> dict:
    model, onnx_path = export_model(folder, shapes)
    return gate_figures(model, onnx_path, ctx.device, precision)


def gate_figures(model: torch.nn.Module, onnx_path: Path, device: str, precision: str) -> dict:
    """The gate's header figures and console lines for ``model`` on ``device`` (fp16 when
    ``precision`` is) against ONNX Runtime on ``onnx_path``, at the ONNX's profile."""
    from fcn_edge.export.trt_gate import reference_backend, run_gate

    reference = reference_backend(onnx_path)
    try:
        meta = reference.meta
        engine = torch_engine(model, meta.input_name, meta.output_name, device,
                              half=precision == "fp16")
        report = run_gate(meta, engine, reference.run, meta.shapes, precision=precision)
    finally:
        reference.close()
    return {**report.to_header(), "lines": report.lines()}


def export_model(folder: Path, shapes: str) -> tuple[torch.nn.Module, Path]:
    """The latency section's model with drawn score layers, saved as a checkpoint and exported
    to an fp32 ONNX (one small parity size, no onnxslim: seconds) whose profile is ``shapes``."""
    from fcn_edge.data import VOC_CLASSES, voc_palette
    from fcn_edge.export.exporter import ExportConfig, export
    from fcn_edge.models import save_checkpoint

    torch.manual_seed(0)
    model = random_scores(create_fcn8s("resnet18")).eval()
    meta = {"classes": list(VOC_CLASSES), "palette": voc_palette(21).tolist(),
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "color_order": "rgb",
            "dataset": {"spec": "synthetic", "image_size": list(IMAGE_SIZE)}}
    checkpoint = save_checkpoint(model, folder / "fcn8s_resnet18.pt", meta)
    config = ExportConfig(str(checkpoint), out_dir=str(folder), simplify=False, shapes=shapes,
                          parity_sizes=(IMAGE_SIZE,))
    return model, export(config, log=lambda line: None).artifacts["fp32"]


def torch_engine(model: torch.nn.Module, input_name: str, output_name: str, device: str,
                 half: bool):
    """An ``Infer`` (input name → batch; output name → logits) of ``model`` on ``device``, in
    fp16 when ``half`` (weights and input cast, the output returned as float32)."""
    dtype = torch.float16 if half else torch.float32
    net = copy.deepcopy(model).to(device=device, dtype=dtype).eval()

    def run(feed) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(feed[input_name])).to(device, dtype)
        with torch.no_grad():
            return {output_name: net(x).float().cpu().numpy()}

    return run
