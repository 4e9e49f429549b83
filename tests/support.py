"""Helpers shared by test folders: ``from support import ...`` (``pythonpath = ["tests"]`` in
pyproject.toml puts this folder on sys.path). Plain functions only; fixtures stay in conftest.py.

torch (and fcn_edge's training side) is imported inside the functions that need it, so that
modules using only the video helpers import without it.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

#: The ONNX metadata props that ``export_onnx`` gives its models.
ONNX_METADATA = {"format": "fcn-edge/onnx", "precision": "fp32", "classes": '["a", "b"]'}


# --- models and checkpoints -------------------------------------------------------------------

def make_checkpoint(path: Path, *, backbone: str = "resnet18", name: str = "fcn8s",
                    image_size=(64, 64), seed: int = 0) -> Path:
    """A real fcn-edge checkpoint of ``name``/``backbone`` for the 8 procedural classes, its
    zero-initialised score layers (§4.2) given values so that labels vary across the image.

    Its meta has what training writes: classes, palette, normalisation, the dataset (the export
    of fp16/int8 opens it to judge ΔmIoU) and validation metrics (copied into artifacts)."""
    import torch

    from fcn_edge.data import PROCEDURAL_CLASSES, voc_palette
    from fcn_edge.models import create_model, save_checkpoint

    torch.manual_seed(seed)
    model = create_model(name, num_classes=len(PROCEDURAL_CLASSES), backbone=backbone)
    awaken(model)
    with torch.no_grad():
        for key, param in model.named_parameters():
            if key.startswith("score"):
                param.normal_(0, 0.05) if param.ndim > 1 else param.zero_()
    meta = {"classes": list(PROCEDURAL_CLASSES),
            "palette": voc_palette(len(PROCEDURAL_CLASSES)).tolist(),
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "color_order": "rgb",
            "ignore_index": 255,
            "dataset": {"spec": "synthetic", "layout": "synthetic",
                        "image_size": list(image_size)},
            "metrics": {"mean_iou": 0.5, "pixel_accuracy": 0.9}}
    return save_checkpoint(model, path, meta)


def awaken(model, size: tuple[int, int] = (64, 96), images: int = 4):
    """Give the BatchNorm layers of each FCN in ``model`` (itself, a multi-head net's trunk, a
    late-fusion net's streams) the running statistics of procedural scenes when its eval-mode
    activations vanish at initialisation; return ``model`` (unchanged otherwise).

    torchvision's initialisations of MobileNetV3 (kaiming ``fan_out`` on depthwise kernels:
    the fan is C·k², the real one k²) and GoogLeNet (N(0, 0.01²)) shrink the activations
    ~1000× per stage in eval mode, where BatchNorm uses its unit initial statistics: an
    untrained net then answers one constant everywhere, and parity, calibration and label
    tests on it would test nothing. Training mode normalises them, so they train as they
    should; here one train-mode pass (cumulative averages, no gradients) does what the first
    steps of training would. ResNet18's initialisation keeps its activations alive and is
    left exactly as it was."""
    import torch

    from fcn_edge.data import normalize, render_scene
    from fcn_edge.models.fcn import FCN

    rng = np.random.default_rng(0)
    rgb = torch.from_numpy(np.stack([normalize(render_scene(rng, *size)[0])
                                     for _ in range(images)]))
    for fcn in [m for m in model.modules() if isinstance(m, FCN)]:
        channels = fcn.config.in_channels
        x = torch.cat([rgb, rgb[:, :1].expand(-1, max(channels - 3, 0), -1, -1)], 1)[:, :channels]
        _awaken_one(fcn, x.contiguous())
    return model


def _awaken_one(fcn, x) -> None:
    import torch

    was_training = fcn.training
    with torch.no_grad():
        if float(fcn.eval().taps(x)[32].std()) < 1e-3:
            norms = [m for m in fcn.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            momenta = [m.momentum for m in norms]
            for m in norms:
                m.reset_running_stats()
                m.momentum = None   # a cumulative average of the pass below
            fcn.train().taps(x)
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
    fcn.train(was_training)


def random_score_fcn8s(num_classes: int = 8):
    """A ResNet18 FCN-8s in eval mode whose zero-initialised score layers (weights and biases)
    are drawn from N(0, 0.01²), seed 0: labels that are not trivial."""
    import torch

    from fcn_edge.models import create_model

    torch.manual_seed(0)
    model = create_model("fcn8s", num_classes=num_classes, backbone="resnet18").eval()
    for name, p in model.named_parameters():
        if "score" in name:
            torch.nn.init.normal_(p, std=0.01)
    return model


def raw_frames_fcn8s(num_classes: int = 8):
    """``random_score_fcn8s`` in its raw-IO + argmax form, as ``fcn-edge export --raw-io
    --argmax`` builds it: N×H×W×3 uint8 BGR frames in, N×H×W uint8 labels out."""
    from fcn_edge.data import IMAGENET_MEAN, IMAGENET_STD
    from fcn_edge.export.graph import DeployGraph

    return DeployGraph(random_score_fcn8s(num_classes), raw_io=True, argmax=True,
                       mean=IMAGENET_MEAN, std=IMAGENET_STD, color_order="rgb")


def export_onnx(module, path: Path, raw: bool = False) -> Path:
    """``module`` traced to ONNX (opset 17, N, H, W dynamic) at ``path`` with ONNX_METADATA:
    ``images`` → ``logits``, or with ``raw`` ``frames`` (N×H×W×3 uint8) → ``labels``."""
    import warnings

    import onnx
    import torch

    names = ("frames", "labels") if raw else ("images", "logits")
    sample = torch.zeros(1, 64, 64, 3, dtype=torch.uint8) if raw else torch.randn(1, 3, 64, 64)
    axes = {0: "N", 1: "H", 2: "W"} if raw else {0: "N", 2: "H", 3: "W"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a 64×64 trace: more threads only contend on a small box
    try:
        with warnings.catch_warnings():   # the tracer's warnings about FCN's size checks
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (sample,), str(path), dynamo=False, opset_version=17,
                              input_names=[names[0]], output_names=[names[1]],
                              dynamic_axes={names[0]: axes, names[1]: axes})
    finally:
        torch.set_num_threads(threads)
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, ONNX_METADATA)
    onnx.save(model, str(path))
    return Path(path)


def ort_infer(model):
    """``infer(batch) -> first output`` on ONNX Runtime CPU, for a model (``ModelProto`` or
    path) with one input: what the export tests hold a graph to."""
    from fcn_edge.export.runners import ort_session

    session = ort_session(model)
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


# --- frames and videos ------------------------------------------------------------------------

def numbered_frame(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Frame ``i``, H×W×3 uint8 BGR: ``i`` in binary as eight 8×8 black or white blocks along
    the top (which survive lossy coding: see ``frame_number``), over a moving bright block."""
    image = np.full((h, w, 3), 96, np.uint8)
    cv2.rectangle(image, (i % 40, 16), (i % 40 + 16, 40), (40, 200, 250), -1)
    for bit in range(8):
        image[:8, bit * 8:bit * 8 + 8] = 255 if (i >> bit) & 1 else 0
    return image


def frame_number(image: np.ndarray) -> int:
    """``i`` read back from a (decoded) ``numbered_frame(i)``."""
    return sum(1 << bit for bit in range(8) if image[1:7, bit * 8 + 1:bit * 8 + 7].mean() > 127)


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float = 25.0) -> Path:
    """``frames`` (H×W×3 uint8 BGR, all of the first one's size) as an mp4v video."""
    frames = list(frames)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened(), "this OpenCV cannot write mp4v"
    for image in frames:
        writer.write(image)
    writer.release()
    return Path(path)


def write_numbered_video(path: Path, frames: int, fps: float = 25.0,
                         size: tuple[int, int] = (48, 64)) -> Path:
    """``numbered_frame(0)`` … ``numbered_frame(frames - 1)`` of ``size`` (H, W) as a video."""
    return write_video(path, (numbered_frame(i, *size) for i in range(frames)), fps)


def read_video(path: Path) -> list[np.ndarray]:
    """Every frame of a video, decoded by OpenCV (BGR)."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"{path} does not open"
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    return frames


def video_fps(path: Path) -> float:
    """The frame rate a video declares, as OpenCV reads it."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"{path} does not open"
    try:
        return capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()


def smooth_image(seed: int, h: int, w: int) -> np.ndarray:
    """A smooth H×W×3 uint8 RGB image (smooth so JPEG changes it little)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def write_rgb(path: Path, image: np.ndarray) -> None:
    """Write an RGB image (any format OpenCV writes by suffix), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def write_gray(path: Path, array: np.ndarray) -> None:
    """Write a one-channel array (uint8 labels, uint16 depth) as is, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
