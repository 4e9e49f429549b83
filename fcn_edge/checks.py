"""`fcn-edge checks`: what this machine can run, and a smoke test of what fcn-edge has.

Like ``yolo checks``: versions of every engine fcn-edge can use, the ONNX Runtime execution
providers, known install conflicts; then each backbone's FCN-8s is built and run on an
odd-sized procedural image, and FCN-8s ResNet18 is fitted to one scene and scored with the
paper's metrics. Nothing here needs torch unless the smoke test runs.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import platform
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import __version__
from .io import Log


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, what was found, and whether that is fine."""

    name: str
    detail: str
    ok: bool = True
    required: bool = False


def _module_version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception:  # an optional engine may fail to import in many ways (missing libs …)
        return None
    return str(getattr(mod, "__version__", "installed"))


def environment() -> list[Check]:
    """Versions of Python and of each engine, with the extra that provides a missing one."""
    checks = [Check("fcn-edge", __version__),
              Check("python", f"{platform.python_version()} ({platform.machine()})")]
    for module, label, extra, required in (
        ("numpy", "numpy", "core", True), ("cv2", "opencv", "core", True),
        ("onnxruntime", "onnxruntime", "core", True), ("PIL", "pillow", "core", True),
        ("torch", "torch", "train", False),
        ("onnx", "onnx", "train", False), ("tensorrt", "tensorrt", "trt", False),
        ("tritonclient", "tritonclient", "serve", False),
    ):
        version = _module_version(module)
        detail = version or f"not installed (pip install 'fcn-edge[{extra}]')"
        checks.append(Check(label, detail, ok=version is not None or not required,
                            required=required))
    checks += (_opencv_checks() + _onnxruntime_checks() + _torch_device_checks()
               + _serve_checks())
    return checks


def _serve_checks() -> list[Check]:
    """Whether ``fcn-edge serve`` can start Triton here: the tritonserver PyTriton bundles,
    with a Python-backend stub for this Python (docs/serving.md)."""
    from .errors import BackendUnavailable
    from .serve.tritonserver import find_tritonserver

    try:
        dist = find_tritonserver()
    except BackendUnavailable as exc:
        return [Check("triton server", f"no: {exc}")]
    return [Check("triton server", f"yes: fcn-edge serve starts {dist.binary}")]


def _opencv_checks() -> list[Check]:
    """Which cameras and streams this OpenCV can read: csi:// and GStreamer pipelines need
    its GStreamer backend, which pip's OpenCV never has (docs/install.md: cameras)."""
    try:
        from .runtime.capture import gstreamer_available
        gstreamer = gstreamer_available()
    except Exception:  # no OpenCV: its own line above says so
        return []
    detail = ("yes: csi:// cameras and GStreamer pipelines can be read" if gstreamer else
              "no: csi:// and GStreamer pipelines need an OpenCV with GStreamer (JetPack's, or "
              "Debian/Ubuntu's python3-opencv; see docs/install.md); V4L2 cameras, files and "
              "rtsp:// work without it")
    return [Check("opencv gstreamer", detail)]


def _onnxruntime_checks() -> list[Check]:
    dists = [d for d in ("onnxruntime", "onnxruntime-gpu") if _dist_installed(d)]
    checks = []
    if len(dists) > 1:
        checks.append(Check("onnxruntime install", "both onnxruntime and onnxruntime-gpu are "
                            "installed and overwrite each other's files: pip uninstall -y "
                            "onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu",
                            ok=False))
    try:
        import onnxruntime as ort
        checks.append(Check("onnxruntime providers", ", ".join(ort.get_available_providers())))
    except Exception:
        pass
    return checks


def _torch_device_checks() -> list[Check]:
    try:
        import torch
    except ImportError:
        return []
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return [Check("cuda", f"{name}, CUDA {torch.version.cuda}")]
    return [Check("cuda", f"not available; training runs on CPU ({torch.get_num_threads()} threads)")]


def _dist_installed(name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def smoke(size: tuple[int, int] = (97, 131), backbones: Sequence[str] | None = None,
          steps: int = 40) -> list[Check]:
    """Build each backbone's FCN-8s (None: every registered one) and run it on an odd-sized
    image; then fit FCN-8s ResNet18 to one procedural scene for ``steps`` SGD steps and score
    it with the paper's metrics."""
    try:
        import torch
    except ImportError:
        return [Check("model smoke test", "skipped: torch is not installed (the runtime "
                      "alone does not need it)")]
    from .config import ModelConfig
    from .models import build, count_parameters
    from .models.registry import backbone_names

    backbones = backbone_names() if backbones is None else backbones

    torch.manual_seed(0)
    image, target = _procedural_scene(*size)
    x = torch.from_numpy(image)[None]
    checks = []
    for backbone in backbones:
        model = build(ModelConfig("fcn8s", num_classes=3, backbone=backbone)).eval()
        start = time.perf_counter()
        with torch.no_grad():
            logits = model(x)
        seconds = time.perf_counter() - start
        ok = logits.shape == (1, 3, *size) and bool(torch.isfinite(logits).all())
        checks.append(Check("model forward", f"fcn8s {backbone}: "
                            f"{count_parameters(model) / 1e6:.1f}M params, 1×3×{size[0]}×{size[1]}"
                            f" → {tuple(logits.shape)} in {seconds * 1000:.0f} ms",
                            ok=ok, required=True))
    fit, model = _fit_check(x, target, steps)
    checks.append(fit)
    checks.append(_export_check(model, target))
    return checks


def _fit_check(x, target: np.ndarray, steps: int):
    """Per-pixel loss (§3) and SGD drive the untrained FCN-8s ResNet18 to fit one scene."""
    import torch
    import torch.nn.functional as F

    from .config import ModelConfig
    from .metrics import ConfusionMatrix
    from .models import build

    model = build(ModelConfig("fcn8s", num_classes=3, backbone="resnet18"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    labels = torch.from_numpy(target)[None]

    def miou() -> float:
        model.eval()
        with torch.no_grad():
            cm = ConfusionMatrix(3)
            cm.update(model(x).argmax(1).numpy(), target[None])
        model.train()
        return cm.compute().mean_iou

    before = miou()
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), labels).backward()
        optimizer.step()
    after = miou()
    return Check("model fit", f"fcn8s resnet18 fit to one procedural scene in {steps} SGD "
                 f"steps: mean IU {before:.3f} → {after:.3f}", ok=after > max(before, 0.5),
                 required=True), model.eval()


def _export_check(model, target: np.ndarray) -> Check:
    """The fitted model through the edge path: checkpoint → ONNX (raw-IO + argmax, parity
    checked by the exporter) → ``Segmenter`` on a uint8 BGR frame, against PyTorch's labels."""
    import tempfile

    import torch

    from .export.exporter import ExportConfig, export
    from .models import save_checkpoint
    from .runtime import Segmenter

    rgb_palette = np.round(_COLOURS * 255).astype(np.uint8)  # palettes are 0..255 colours
    rgb = rgb_palette[target]
    h, w = target.shape
    with tempfile.TemporaryDirectory(prefix="fcn-edge-checks-") as folder:
        meta = {"classes": ["background", "disc", "bar"], "palette": rgb_palette.tolist(),
                "mean": [_MEAN] * 3, "std": [_STD] * 3, "color_order": "rgb"}
        checkpoint = save_checkpoint(model, f"{folder}/fit.pt", meta)
        start = time.perf_counter()
        config = ExportConfig(str(checkpoint), out_dir=folder, raw_io=True, argmax=True,
                              simplify=False, parity_sizes=((h, w),))
        artifact = export(config, log=lambda line: None).artifacts["fp32"]
        with Segmenter(artifact, backend="onnxruntime:cpu") as seg:
            labels = seg(np.ascontiguousarray(rgb[..., ::-1]))
        seconds = time.perf_counter() - start
    x = torch.from_numpy(((rgb / 255.0 - _MEAN) / _STD).transpose(2, 0, 1).astype(np.float32))
    with torch.no_grad():
        reference = model(x[None]).argmax(1)[0].numpy()
    agreement = float((labels == reference).mean())
    return Check("export + runtime", f"fitted model → ONNX (raw-IO, argmax) → Segmenter: labels "
                 f"agree with PyTorch on {agreement:.2%} of pixels ({seconds:.1f} s)",
                 ok=agreement >= 0.999, required=True)


def _procedural_scene(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A small normalised image with a disc and a bar, and its 3-class label map."""
    yy, xx = np.mgrid[:h, :w]
    target = np.zeros((h, w), np.int64)
    target[(yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (min(h, w) / 4) ** 2] = 1
    target[:, int(w * 0.7):int(w * 0.8)] = 2
    image = _COLOURS[target].transpose(2, 0, 1)
    return np.ascontiguousarray((image - _MEAN) / _STD, dtype=np.float32), target


_COLOURS = np.array([[0.1, 0.2, 0.3], [0.9, 0.1, 0.1], [0.1, 0.8, 0.2]], np.float32)
_MEAN, _STD = 0.45, 0.25


def run_checks(print_line: Log = print, with_smoke: bool = True) -> bool:
    """Print the report; True when every required check passed."""
    checks = environment() + (smoke() if with_smoke else [])
    for check in checks:
        mark = "ok  " if check.ok else ("FAIL" if check.required else "warn")
        print_line(f"{mark}  {check.name:<22} {check.detail}")
    return all(c.ok for c in checks if c.required)
