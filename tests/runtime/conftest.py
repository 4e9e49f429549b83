"""Shared by the runtime tests: one checkpoint, its ONNX exports (made once, on first use), the
PyTorch reference labels, real-looking frames, and the stand-in for TensorRT and CUDA
(tests/support_tensorrt.py) installed in the TensorRT backend.

The stand-in runs the native TensorRT backend's own code on a machine without a GPU: its
"engine" is the ONNX model run by ONNX Runtime, its "device memory" is host memory, and it
speaks exactly the calls the backend makes (TensorRT 10's named-tensor API, cuda-python's
runtime API), so allocation, growth, copies, profile handling and clean-up are all exercised.
"""
from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import onnx
import pytest
import torch

from fcn_edge.data.procedural import render_scene
from fcn_edge.export.exporter import ExportConfig, export
from fcn_edge.export.onnx_props import set_metadata
from fcn_edge.models import load_model
from fcn_edge.runtime.backends import tensorrt as trt_backend
from fcn_edge.runtime.engine_file import write_engine
from fcn_edge.runtime.metadata import ArtifactMeta, parse_shapes
from fcn_edge.runtime.processing import frames_to_input

from support import make_checkpoint
from support_tensorrt import GPU, FakeCudart, FakeEngine, FakeTensorRT

#: Export options of each ONNX kind the tests use.
KINDS = {"plain": {}, "rawio": {"raw_io": True}, "argmax": {"argmax": True},
         "rawio_argmax": {"raw_io": True, "argmax": True},
         "rawio_argmax_int32": {"raw_io": True, "argmax": True, "labels_dtype": "int32"}}
SMALL_PROFILE = "32x32:64x64:256x256"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread for torch while these tests run: on a busy 2-core machine its
    spinning OpenMP workers made a small forward pass 20× slower (2 s against 0.1 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture(scope="session")
def onnx_artifact(checkpoint, tmp_path_factory) -> Callable[[str], Path]:
    """``onnx_artifact(kind)``: the checkpoint exported as ``kind`` (see KINDS), made once.

    One parity size and no onnxslim pass keep each export to a few seconds; parity itself is
    the exporter's business, tested in tests/export.
    """
    made: dict[str, Path] = {}
    lock = threading.Lock()

    def get(kind: str) -> Path:
        with lock:
            if kind == "small_profile":
                if kind not in made:
                    made[kind] = _with_shapes(get_unlocked("rawio_argmax"), SMALL_PROFILE)
                return made[kind]
            return get_unlocked(kind)

    def get_unlocked(kind: str) -> Path:
        if kind not in made:
            out = tmp_path_factory.mktemp(kind)
            config = ExportConfig(str(checkpoint), out_dir=str(out), simplify=False,
                                  parity_sizes=((64, 64),), **KINDS[kind])
            made[kind] = export(config, log=lambda s: None).artifacts["fp32"]
        return made[kind]

    return get


def _with_shapes(source: Path, shapes: str) -> Path:
    """A copy of ``source`` whose metadata declares ``shapes``: what `--shapes` would write."""
    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props}
    meta = ArtifactMeta.from_props(props).with_(shapes=parse_shapes(shapes))
    set_metadata(model, meta.to_props())
    path = source.with_name(source.stem + "_small.onnx")
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def reference(checkpoint) -> Callable[[np.ndarray], np.ndarray]:
    """PyTorch fp32 labels (H×W uint8) for one BGR frame: the reference every backend meets."""
    model = load_model(checkpoint).eval()
    meta = model.meta
    known: dict[tuple, np.ndarray] = {}  # every artifact kind is held to the same frames

    def labels(frame_bgr: np.ndarray) -> np.ndarray:
        key = (frame_bgr.shape, hash(frame_bgr.tobytes()))
        if key not in known:
            x = frames_to_input(frame_bgr, meta.mean, meta.std, meta.color_order, "bgr")
            with torch.no_grad():
                logits = model(torch.from_numpy(x))
            known[key] = logits.argmax(1)[0].numpy().astype(np.uint8)
        return known[key]

    return labels


def _scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    rgb = render_scene(np.random.default_rng(seed), height, width)[0]
    return np.ascontiguousarray(rgb[..., ::-1])


@pytest.fixture(scope="session")
def scene() -> Callable[..., np.ndarray]:
    """``scene(h, w, seed=0)``: a real-looking H×W×3 uint8 BGR frame (procedural), fixed."""
    return _scene


# --- a stand-in for TensorRT and cuda-python ------------------------------------------------



@pytest.fixture
def fake_tensorrt(monkeypatch, tmp_path):
    """Stand-ins installed in the TensorRT backend; ``.engine(onnx, **header)`` writes an
    fcn-edge engine file whose plan the stand-in can run."""
    trt, cudart = FakeTensorRT(), FakeCudart()
    monkeypatch.setattr(trt_backend, "_import_tensorrt", lambda: trt)
    monkeypatch.setattr(trt_backend, "_open_cuda",
                        lambda device_id: trt_backend._CudaRuntime(cudart, device_id))
    monkeypatch.setattr(trt_backend, "query_gpu", lambda device_id=None: GPU)
    monkeypatch.setattr(trt_backend, "probe", lambda path=None, device_id=0:
                        (True, f"TensorRT {trt.__version__} (stand-in)"))

    def engine(onnx_path: Path, name: str = "model.engine", gpu=GPU,
               tensorrt_version: str = FakeTensorRT.__version__) -> Path:
        data = Path(onnx_path).read_bytes()
        meta = FakeEngine(data).meta
        header = {"meta": meta.to_dict(), "tensorrt_version": tensorrt_version,
                  "gpu": {"name": gpu[0], "compute_capability": gpu[1]},
                  "onnx_file": Path(onnx_path).name}
        return write_engine(tmp_path / name, data, header)

    return SimpleNamespace(trt=trt, cudart=cudart, engine=engine, gpu=GPU)
