"""Small paper-§5 models for the runtime tests: RGB-D inputs and several heads, as checkpoints
and as ONNX artifacts made by the real exporter, with the PyTorch model's own labels per head
as the reference. Plain functions (``from support_multi_io import ...``); fixtures stay in the
test files. torch is imported inside the functions that need it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from support import awaken

#: The geometric head's colours: distinct from each other and from the semantic palette's
#: first entries, so an overlay shows which head it was drawn from.
GEOMETRIC_PALETTE = ((10, 20, 30), (220, 40, 0), (0, 170, 250))
TWO_HEADS = (("semantic", 8), ("geometric", 3))
SIZE = 48  # frames and the export's parity size: small, so every test stays fast


def make_multi_checkpoint(path: Path, *, inputs=(("rgb", 3), ("depth", 1)), heads=TWO_HEADS,
                          fusion: str = "early", name: str = "fcn16s", seed: int = 0,
                          backbone: str = "resnet18") -> Path:
    """A ResNet18 (or ``backbone``) FCN (16s by default, as the paper's SIFT Flow net; 32s labels
    barely vary at 48 px) taking ``inputs`` with ``heads`` (or 8 classes when ``heads`` is empty), random
    weights, score layers drawn from N(0, 0.05²) so labels vary over the image (the upsampling
    stays bilinear, so they vary smoothly, as a trained net's do); its meta names every task's
    classes and colours as training writes them."""
    import torch

    from fcn_edge.data import PROCEDURAL_CLASSES, voc_palette
    from fcn_edge.data.procedural_multi import GEOMETRIC_CLASSES
    from fcn_edge.models import create_model, save_checkpoint

    torch.manual_seed(seed)
    options = {"heads": tuple(heads)} if heads else {"num_classes": 8}
    model = create_model(name, backbone=backbone, inputs=tuple(inputs), fusion=fusion,
                         **options)
    awaken(model)
    with torch.no_grad():
        for key, param in model.named_parameters():
            if key.split(".")[-2].startswith("score"):  # score_fr, score_pool4 …: not upscore
                param.normal_(0, 0.05) if param.ndim > 1 else param.zero_()
    meta = {"classes": list(PROCEDURAL_CLASSES), "palette": voc_palette(8).tolist(),
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "color_order": "rgb", "dataset": {"spec": "synthetic", "image_size": [SIZE, SIZE]}}
    if heads:
        meta["tasks"] = {
            "semantic": {"classes": list(PROCEDURAL_CLASSES), "palette": voc_palette(8).tolist()},
            "geometric": {"classes": list(GEOMETRIC_CLASSES),
                          "palette": [list(c) for c in GEOMETRIC_PALETTE]}}
    return save_checkpoint(model.eval(), path, meta)


def export_artifact(checkpoint: Path, out_dir: Path, **options) -> Path:
    """The checkpoint exported by ``fcn_edge.export`` (fp32; ``raw_io``/``argmax`` options),
    with one parity size and no onnxslim pass to keep it to a few seconds."""
    from fcn_edge.export.exporter import ExportConfig, export

    config = ExportConfig(str(checkpoint), out_dir=str(out_dir), simplify=False,
                          parity_sizes=((SIZE, SIZE),), **options)
    return export(config, log=lambda line: None).artifacts["fp32"]


def torch_reference(checkpoint: Path) -> Callable[..., dict]:
    """``reference(frame_bgr, depth=None, hha=None)``: {task (None for one head): (H×W labels,
    H×W top-1 minus top-2 score margin)} from the PyTorch model on the stacked encoded inputs."""
    import torch

    from fcn_edge.models import load_model
    from fcn_edge.runtime.modalities import stack_inputs

    model = load_model(checkpoint).eval()
    meta, names = model.meta, model.config.input_names

    def reference(frame_bgr: np.ndarray, depth=None, hha=None) -> dict:
        arrays = {"rgb": frame_bgr, "depth": depth, "hha": hha}
        x = stack_inputs({n: arrays[n] for n in names}, names, meta.mean, meta.std,
                         frame_order="bgr", color_order=meta.color_order)
        with torch.no_grad():
            scores = model(torch.from_numpy(x))
        scores = scores if isinstance(scores, dict) else {None: scores}
        out = {}
        for task, s in scores.items():
            top2 = s[0].topk(2, dim=0).values.numpy()
            out[task] = (s[0].argmax(0).numpy().astype(np.uint8), top2[0] - top2[1])
        return out

    return reference


def scene_depth(frame_bgr: np.ndarray, seed: int = 0) -> np.ndarray:
    """H×W uint16 depth in millimetres for a frame: a ramp from 1 m to 6 m with a near box
    (sharp edges) and a few holes (0: no reading), as a depth camera gives."""
    h, w = frame_bgr.shape[:2]
    rng = np.random.default_rng(seed)
    depth = np.linspace(1000, 6000, h, dtype=np.float64)[:, None].repeat(w, axis=1)
    y, x = rng.integers(0, max(1, h // 2)), rng.integers(0, max(1, w // 2))
    depth[y:y + h // 3, x:x + w // 3] = 700.0
    depth = depth.astype(np.uint16)
    depth[rng.random((h, w)) < 0.02] = 0
    return depth


def write_depth_png(path: Path, depth_mm: np.ndarray) -> Path:
    """A uint16 depth map as a 16-bit PNG (NYUDv2's format)."""
    assert depth_mm.dtype == np.uint16
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), depth_mm)
    return path
