"""The backend base class owns the call (Polygraphy's template method): ``run`` refuses a closed
backend and a feed that does not fit, times the call per thread and hands the checked feed to
the backend's ``_run``; and the torch backend reaches the model code only through its
registered checkpoint loader."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fcn_edge.errors import BackendUnavailable, FcnEdgeError, InputError
from fcn_edge.runtime.backends import Backend, BackendBase, InputSpec
from fcn_edge.runtime.backends import torch as torch_backend
from fcn_edge.runtime.metadata import ArtifactMeta, Shapes
from fcn_edge.runtime.onnx_file import read_onnx_metadata

ROOT = Path(__file__).resolve().parents[2]
META = ArtifactMeta(model="fcn8s", backbone="vgg16", num_classes=2, classes=("bg", "fg"),
                    palette=((0, 0, 0), (255, 0, 0)), mean=(0.485, 0.456, 0.406),
                    std=(0.229, 0.224, 0.225),
                    shapes=Shapes((1, 32, 32), (1, 64, 64), (2, 128, 128)))


class Doubling(BackendBase):
    """Logits = twice the first two channels; records every feed ``_run`` was given."""

    name = "doubling"

    def __init__(self) -> None:
        self.path, self.meta = Path("doubling.onnx"), META
        self.input_spec = InputSpec.for_meta(META)
        self.feeds: list[dict] = []

    def _run(self, feed):
        self.feeds.append(feed)
        return {self.meta.output_name: 2 * feed[self.input_spec.name][:, :2]}


def _batch(n: int = 1, h: int = 8, w: int = 8) -> np.ndarray:
    return np.arange(n * 3 * h * w, dtype=np.float32).reshape(n, 3, h, w)


def test_run_checks_the_feed_then_calls_run_and_infer_is_its_shorthand():
    backend = Doubling()
    assert isinstance(backend, Backend)
    batch = _batch()
    out = backend.run({"images": batch})
    assert list(out) == [META.output_name]
    np.testing.assert_array_equal(out[META.output_name], 2 * batch[:, :2])
    np.testing.assert_array_equal(backend.infer(batch), 2 * batch[:, :2])
    assert len(backend.feeds) == 2
    for bad, message in [({"frames": batch}, "lacks images; has unknown frames"),
                         ({"images": batch.astype(np.float64)}, "float32"),
                         ({"images": batch[:, :1]}, "3 channels")]:
        with pytest.raises(InputError, match=message):
            backend.run(bad)
    assert len(backend.feeds) == 2  # a refused feed never reaches the backend's own code


def test_a_closed_backend_refuses_before_its_own_code_runs():
    with Doubling() as backend:
        backend.infer(_batch())
    with pytest.raises(FcnEdgeError, match="doubling backend for doubling.onnx is closed"):
        backend.infer(_batch())
    assert len(backend.feeds) == 1 and "closed" in repr(backend)


def test_a_backend_without_its_own_run_says_so():
    class Empty(Doubling):
        _run = BackendBase._run

    with pytest.raises(NotImplementedError, match="Empty does not implement _run"):
        Empty().infer(_batch())


def test_call_times_are_per_thread_and_start_again_when_taken():
    backend = Doubling()
    assert backend.take_call_times().calls == 0
    before = time.perf_counter()
    backend.infer(_batch())
    backend.infer(_batch())
    other = threading.Thread(target=lambda: backend.infer(_batch()))
    other.start()
    other.join()
    after = time.perf_counter()
    times = backend.take_call_times()
    assert times.calls == 2  # the other thread's call is its own
    assert before <= times.first_start <= times.last_end <= after
    assert 0 < times.seconds <= times.last_end - times.first_start
    assert backend.take_call_times().calls == 0


# --- the torch backend's seam to the model code ----------------------------------------------

def test_the_torch_backend_opens_checkpoints_through_the_registered_loader(tmp_path,
                                                                           onnx_artifact,
                                                                           monkeypatch):
    torch = pytest.importorskip("torch")
    meta = read_onnx_metadata(onnx_artifact("plain"))
    calls = []

    def loader(path, device, argmax, fp16):
        calls.append((path, device, argmax, fp16))
        conv = torch.nn.Conv2d(3, meta.num_classes, 1)
        return conv.eval(), meta

    monkeypatch.setattr(torch_backend, "_loader", None)
    torch_backend.register_checkpoint_loader(loader)
    path = tmp_path / "stand-in.pt"
    path.write_bytes(b"never read: the loader above stands in for the model code")
    with torch_backend.TorchBackend(path) as backend:
        logits = backend.infer(np.zeros((1, 3, 16, 16), np.float32))
    assert calls == [(path, "cpu", False, False)]
    assert logits.shape == (1, meta.num_classes, 16, 16) and backend.meta == meta


def test_without_a_registered_loader_the_seam_imports_the_one_that_registers(monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setattr(torch_backend, "_loader", None)
    monkeypatch.delitem(sys.modules, torch_backend.LOADER_MODULE, raising=False)
    loader = torch_backend.checkpoint_loader()
    assert (loader.__module__, loader.__name__) == (torch_backend.LOADER_MODULE,
                                                    "load_checkpoint")
    assert torch_backend.LOADER_MODULE in sys.modules


def test_a_seam_module_that_registers_nothing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch_backend, "_loader", None)
    monkeypatch.setattr(torch_backend, "LOADER_MODULE", "json")  # imports, registers nothing
    with pytest.raises(BackendUnavailable, match="json registered no checkpoint loader"):
        torch_backend.checkpoint_loader()
    monkeypatch.setattr(torch_backend, "LOADER_MODULE", "fcn_edge.no_such_module")
    with pytest.raises(BackendUnavailable, match=r"needs fcn-edge's model code.*fcn-edge\[train\]"):
        torch_backend.checkpoint_loader()


def test_opening_the_backends_imports_neither_models_nor_export():
    code = ("import sys, fcn_edge.runtime.backends, fcn_edge.runtime.segmenter\n"
            "print(sorted(m for m in sys.modules if m.startswith(('fcn_edge.models', "
            "'fcn_edge.export', 'fcn_edge.data', 'fcn_edge.train'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def test_check_threads_bounds_counts_by_the_cpus_and_names_the_flag():
    import os

    from fcn_edge.errors import InputError
    from fcn_edge.runtime.backends.base import THREADS_PER_CPU, check_threads, max_threads

    assert max_threads() == THREADS_PER_CPU * len(os.sched_getaffinity(0))
    assert check_threads(None) is None and check_threads(max_threads()) == max_threads()
    assert check_threads(0, zero="one per core") == 0
    for bad in (0, -2, max_threads() + 1, 100000, 2.5, True):
        with pytest.raises(InputError, match=r"^--threads must be an integer from 1 to \d+"):
            check_threads(bad, "--threads")
