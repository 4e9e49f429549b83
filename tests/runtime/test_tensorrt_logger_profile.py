"""What ``fcn-edge build`` and the TensorRT backend share and refuse (issue 14): one TensorRT
logger per process, made once even under threads and shared by builds and backends; and an
optimisation profile TensorRT refuses is an InputError naming the input, not TensorRT's bare
RuntimeError.

TensorRT cannot be installed here: the builder calls are answered by a stand-in added to
the runtime stand-in ``FakeTensorRT`` of tests/support_tensorrt.py (the names and signatures of
TensorRT's Python bindings, as
tests/export/test_tensorrt_plan.py's stand-in has them); its ``set_shape`` raises the
RuntimeError TensorRT's bindings raise (NVIDIA/TensorRT python/src/infer/pyCore.cpp,
``opt_profile_set_shape``) when min/opt/max are inconsistent.
"""
from __future__ import annotations

import threading
import time
import types
from pathlib import Path

import pytest

from fcn_edge.errors import InputError
from fcn_edge.export.tensorrt import _build_plan, _Job
from fcn_edge.export.trt_options import BuildOptions
from fcn_edge.runtime.backends.tensorrt import TensorRTBackend, tensorrt_logger
from fcn_edge.runtime.metadata import ArtifactMeta

META = ArtifactMeta(model="fcn8s", backbone="resnet18", num_classes=3, classes=("bg", "a", "b"),
                    palette=((0, 0, 0), (128, 0, 0), (0, 128, 0)), mean=(0.5,) * 3,
                    std=(0.25,) * 3)
PROFILE = {"images": ((1, 3, 32, 32), (1, 3, 64, 64), (2, 3, 128, 128))}


def add_stand_in_builder(trt, monkeypatch) -> list:
    """Give the stand-in FakeTensorRT (a stand-in: no TensorRT here) the builder calls
    ``_build_plan`` makes; returns the list of loggers Builder and OnnxParser were given."""
    loggers: list = []

    class Profile:
        def set_shape(self, input, min, opt, max):  # noqa: A002 — TensorRT's keyword names
            for lo, mid, hi in zip(min, opt, max):
                if not lo <= mid <= hi:
                    raise RuntimeError("Shape provided for min is inconsistent with other "
                                       "shapes.")

    class Config:
        def set_memory_pool_limit(self, pool, pool_size): pass
        def set_flag(self, flag): pass
        def add_optimization_profile(self, profile): return 0
        def create_timing_cache(self, data): return types.SimpleNamespace(serialize=lambda: b"t")
        def set_timing_cache(self, cache, ignore_mismatch): self.cache = cache; return True
        def get_timing_cache(self): return self.cache

    class Builder:
        def __init__(self, logger): loggers.append(logger)
        def create_network(self, flags=0):
            tensors = [types.SimpleNamespace(name=n) for n in ("images", "logits")]
            return types.SimpleNamespace(num_inputs=1, num_outputs=1,
                                         get_input=lambda i: tensors[0],
                                         get_output=lambda i: tensors[1])
        def create_builder_config(self): return Config()
        def create_optimization_profile(self): return Profile()
        def build_serialized_network(self, network, config): return b"plan"

    class OnnxParser:
        num_errors = 0
        def __init__(self, network, logger): loggers.append(logger)
        def parse_from_file(self, path): return True

    for name, value in (("Builder", Builder), ("OnnxParser", OnnxParser),
                        ("NetworkDefinitionCreationFlag", types.SimpleNamespace()),
                        ("BuilderFlag", types.SimpleNamespace()),
                        ("MemoryPoolType", types.SimpleNamespace(WORKSPACE=0))):
        monkeypatch.setattr(trt, name, value, raising=False)
    return loggers


def build(trt, tmp_path: Path, profile=PROFILE) -> bytes:
    job = _Job(tmp_path / "model.onnx", BuildOptions(workspace_gb=0.5, cache_dir=tmp_path),
               META, profile, "builder_flag", trt, ("Fake GPU 3000", "8.6"), "0" * 64, "key", {})
    plan, _ = _build_plan(job, tmp_path / "timing.cache")
    return plan


def test_builds_and_backends_share_one_logger(fake_tensorrt, onnx_artifact, monkeypatch,
                                              tmp_path):
    trt = fake_tensorrt.trt
    loggers = add_stand_in_builder(trt, monkeypatch)
    runtime = trt.Runtime
    monkeypatch.setattr(trt, "Runtime", lambda logger: loggers.append(logger) or runtime(logger))
    assert build(trt, tmp_path) == b"plan" and build(trt, tmp_path) == b"plan"
    with TensorRTBackend(fake_tensorrt.engine(onnx_artifact("plain"))):
        pass
    assert trt.Logger.made == 1  # before: one per build and one per backend, three here
    assert len(loggers) == 5 and all(logger is loggers[0] for logger in loggers)
    assert loggers[0].level == trt.Logger.WARNING


def test_the_logger_is_made_once_when_threads_race_for_it(fake_tensorrt, monkeypatch):
    trt = fake_tensorrt.trt
    make = trt.Logger.__init__

    def slow_init(self, level):  # widen the window between "none yet" and "made"
        time.sleep(0.01)
        make(self, level)

    monkeypatch.setattr(trt.Logger, "__init__", slow_init)
    got, start = [], threading.Barrier(8)

    def take():
        start.wait()
        got.append(tensorrt_logger(trt))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert trt.Logger.made == 1 and len(got) == 8 and all(g is got[0] for g in got)


def test_another_tensorrt_module_gets_a_logger_of_its_own(fake_tensorrt):
    # Keyed by the module: a real process has one tensorrt; each test's stand-in is another,
    # and must not be handed the logger an earlier stand-in made.
    first = tensorrt_logger(fake_tensorrt.trt)
    other = type(fake_tensorrt.trt)()
    second = tensorrt_logger(other)
    assert isinstance(first, fake_tensorrt.trt.Logger) and isinstance(second, other.Logger)
    assert tensorrt_logger(other) is second and other.Logger.made == 1


def test_a_profile_tensorrt_refuses_is_an_input_error_naming_the_input(fake_tensorrt,
                                                                        monkeypatch, tmp_path):
    add_stand_in_builder(fake_tensorrt.trt, monkeypatch)
    bad = {"images": ((1, 3, 96, 96), (1, 3, 64, 64), (2, 3, 128, 128))}  # min above opt
    with pytest.raises(InputError) as info:
        build(fake_tensorrt.trt, tmp_path, bad)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("TensorRT refused the optimisation profile of input 'images' in "
                              "model.onnx (min (1, 3, 96, 96), opt (1, 3, 64, 64), max "
                              "(2, 3, 128, 128)): Shape provided for min is inconsistent")
    assert "--shapes MIN:OPT:MAX" in message
