"""Backends: the registry (kinds, auto order and its reasons, refusals), the protocol, each
backend's own behaviour, and the native TensorRT backend's code run on a stand-in for TensorRT
and CUDA (conftest.py). Tests that need real TensorRT or a GPU are marked and skip here."""
from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
import torch

from fcn_edge.errors import BackendUnavailable, FcnEdgeError, InputError, ModelFormatError
from fcn_edge.runtime import Segmenter
from fcn_edge.runtime.backends import (ARTIFACT_KINDS, AUTO_ORDER, BACKENDS, Backend, InputSpec,
                                       available_backends, backend_names, open_backend)
from fcn_edge.runtime.backends import tensorrt as trt_backend
from fcn_edge.runtime.backends.cuda import query_gpu
from fcn_edge.runtime.backends.onnxruntime import _trt_options
from fcn_edge.runtime.backends.tensorrt import TensorRTBackend
from fcn_edge.runtime.engine_file import write_engine
from fcn_edge.runtime.onnx_file import read_onnx_metadata

REAL_TRT_PROBE = trt_backend.probe  # before any test stands in for it

PROVIDERS = ort.get_available_providers()


def _gpu_here() -> bool:
    try:
        query_gpu()
        return True
    except Exception:  # noqa: BLE001 — no bindings, no driver, no device: all mean "no GPU"
        return False


# --- the registry ------------------------------------------------------------------------------

def test_the_registry_maps_kinds_to_backends_in_auto_order():
    assert AUTO_ORDER == ("tensorrt", "onnxruntime:tensorrt", "onnxruntime:cuda",
                          "onnxruntime:cpu", "torch:cuda", "torch:cpu")
    assert {k: [e.name for e in v] for k, v in BACKENDS.items()} == {
        "engine": ["tensorrt"],
        "onnx": ["onnxruntime:tensorrt", "onnxruntime:cuda", "onnxruntime:cpu"],
        "checkpoint": ["torch:cuda", "torch:cpu"]}
    assert ARTIFACT_KINDS[".onnx"] == "onnx"
    assert ARTIFACT_KINDS[".engine"] == ARTIFACT_KINDS[".plan"] == "engine"
    assert ARTIFACT_KINDS[".pt"] == ARTIFACT_KINDS[".pth"] == ARTIFACT_KINDS[".safetensors"] \
        == "checkpoint"
    assert backend_names() == ["auto", "onnxruntime", "torch", *AUTO_ORDER]


def test_available_backends_lists_every_backend_with_a_reason(onnx_artifact, checkpoint):
    rows = available_backends(onnx_artifact("plain"))
    assert [name for name, _, _ in rows] == list(AUTO_ORDER)
    assert all(isinstance(ok, bool) and reason for _, ok, reason in rows)
    onnx_rows = {name: (ok, reason) for name, ok, reason in rows}
    assert onnx_rows["onnxruntime:cpu"][0]
    assert not onnx_rows["tensorrt"][0] and "fcn-edge build" in onnx_rows["tensorrt"][1]
    assert not onnx_rows["torch:cpu"][0] and "checkpoint" in onnx_rows["torch:cpu"][1]
    if "CUDAExecutionProvider" not in PROVIDERS:
        assert not onnx_rows["onnxruntime:cuda"][0]
        assert "fcn-edge[gpu]" in onnx_rows["onnxruntime:cuda"][1]
    ckpt_rows = {name: (ok, reason) for name, ok, reason in available_backends(checkpoint)}
    assert ckpt_rows["torch:cpu"][0] and "fcn-edge export" in ckpt_rows["onnxruntime:cpu"][1]
    if not torch.cuda.is_available():
        assert not ckpt_rows["torch:cuda"][0] and "no CUDA GPU" in ckpt_rows["torch:cuda"][1]


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="TensorRT is installed here")
def test_an_engine_without_tensorrt_says_what_to_install(onnx_artifact, fake_tensorrt,
                                                          monkeypatch):
    engine = fake_tensorrt.engine(onnx_artifact("plain"))
    monkeypatch.undo()  # the real probes again: TensorRT is missing
    (name, ok, reason), *_ = available_backends(engine)
    assert (name, ok) == ("tensorrt", False) and "fcn-edge[trt]" in reason
    with pytest.raises(BackendUnavailable, match=r"no backend can run .*fcn-edge\[trt\]"):
        open_backend(engine)
    assert trt_backend.probe(None)[0] is False


def test_auto_picks_the_fastest_available_and_says_why(onnx_artifact):
    expected = next(n for n, p in (("onnxruntime:tensorrt", "TensorrtExecutionProvider"),
                                   ("onnxruntime:cuda", "CUDAExecutionProvider"),
                                   ("onnxruntime:cpu", "CPUExecutionProvider")) if p in PROVIDERS)
    with open_backend(onnx_artifact("plain")) as backend:
        assert backend.name == expected
        assert backend.reason.startswith(f"auto chose {expected}: the fastest backend")
        if expected == "onnxruntime:cpu":
            assert "passed over onnxruntime:tensorrt" in backend.reason
            assert "onnxruntime:cuda: onnxruntime" in backend.reason


def test_backends_by_name_and_by_group(onnx_artifact, checkpoint):
    with open_backend(onnx_artifact("plain"), "onnxruntime:cpu") as backend:
        assert backend.reason.startswith("onnxruntime:cpu, as asked")
    with open_backend(onnx_artifact("plain"), "onnxruntime") as backend:
        assert backend.name.startswith("onnxruntime:")
    with open_backend(checkpoint, "torch") as backend:
        assert backend.name == ("torch:cuda" if torch.cuda.is_available() else "torch:cpu")


def test_unknown_mismatched_and_unavailable_backends(onnx_artifact, checkpoint):
    path = onnx_artifact("plain")
    with pytest.raises(InputError, match="unknown backend 'tensorflow'.*auto, onnxruntime"):
        open_backend(path, "tensorflow")
    with pytest.raises(InputError, match="runs fcn-edge TensorRT engines.*fcn-edge build"):
        open_backend(path, "tensorrt")
    with pytest.raises(InputError, match="runs ONNX models.*fcn-edge export"):
        open_backend(checkpoint, "onnxruntime")
    with pytest.raises(InputError, match="unknown option.*warp_speed.*threads"):
        open_backend(path, threads=1, warp_speed=9)
    if "CUDAExecutionProvider" not in PROVIDERS:
        with pytest.raises(BackendUnavailable, match=r"fcn-edge\[gpu\]"):
            open_backend(path, "onnxruntime:cuda")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="no CUDA GPU"):
            open_backend(checkpoint, "torch:cuda")


# --- the protocol and ONNX Runtime -------------------------------------------------------------

def test_the_protocol_context_manager_and_input_checks(onnx_artifact):
    with open_backend(onnx_artifact("rawio_argmax"), threads=1) as backend:
        assert isinstance(backend, Backend) and backend.thread_safe
        assert backend.input_spec == InputSpec("frames", "NHWC", np.dtype(np.uint8), None)
        out = backend.infer(np.zeros((2, 17, 23, 3), np.uint8))
        assert out.shape == (2, 17, 23) and out.dtype == np.uint8
        assert "intra-op threads 1" in backend.describe()
        with pytest.raises(InputError, match="uint8"):
            backend.infer(np.zeros((1, 17, 23, 3), np.float32))
        with pytest.raises(InputError, match="3 channels"):
            backend.infer(np.zeros((1, 17, 23, 4), np.uint8))
    with pytest.raises(FcnEdgeError, match="closed"):
        backend.infer(np.zeros((1, 8, 8, 3), np.uint8))
    with open_backend(onnx_artifact("plain")) as backend:
        assert (backend.input_spec.layout, backend.input_spec.dtype) == ("NCHW", np.float32)
        logits = backend.infer(np.zeros((1, 3, 16, 16), np.float32))
        assert logits.shape == (1, backend.meta.num_classes, 16, 16)
        assert logits.dtype == np.float32


def test_onnx_metadata_is_read_without_onnx_as_the_session_reads_it(onnx_artifact, tmp_path):
    for kind in ("plain", "rawio_argmax"):
        with open_backend(onnx_artifact(kind)) as backend:
            assert read_onnx_metadata(onnx_artifact(kind)) == backend.meta
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x0a\xff\xff\xff\xff\x0f")  # a field longer than the file
    with pytest.raises(ModelFormatError, match="bad.onnx"):
        read_onnx_metadata(bad)


def test_the_tensorrt_provider_gets_the_artifacts_profile(onnx_artifact, tmp_path):
    meta = read_onnx_metadata(onnx_artifact("small_profile"))
    options = _trt_options(meta, fp16=True, device_id=1, cache_dir=tmp_path)
    assert options["trt_profile_min_shapes"] == "frames:1x32x32x3"
    assert options["trt_profile_opt_shapes"] == "frames:1x64x64x3"
    assert options["trt_profile_max_shapes"] == "frames:1x256x256x3"
    assert options["trt_fp16_enable"] == "True" and options["device_id"] == "1"
    assert options["trt_engine_cache_path"] == str(tmp_path)


# --- PyTorch -----------------------------------------------------------------------------------

def test_the_torch_backend_is_the_checkpoint_itself(checkpoint):
    from fcn_edge.models import load_model

    x = np.random.default_rng(0).normal(size=(2, 3, 21, 34)).astype(np.float32)
    with torch.no_grad():
        expected = load_model(checkpoint).eval()(torch.from_numpy(x)).numpy()
    with open_backend(checkpoint, "torch:cpu") as backend:
        assert backend.meta.precision == "fp32" and not backend.meta.argmax
        assert backend.input_spec == InputSpec("images", "NCHW", np.dtype(np.float32), None)
        np.testing.assert_allclose(backend.infer(x), expected, rtol=0, atol=1e-5)
        assert backend.infer(x[:, :, ::2, ::2].copy()).shape == (2, 8, 11, 17)
    with open_backend(checkpoint, "torch:cpu", argmax=True) as backend:
        labels = backend.infer(x)
        assert labels.dtype == np.uint8 and np.array_equal(labels, expected.argmax(1))
    with pytest.raises(InputError, match="need device='cuda'"):
        open_backend(checkpoint, "torch:cpu", fp16=True)


# --- native TensorRT, on the stand-in ----------------------------------------------------------

def test_tensorrt_runs_an_engine_like_onnxruntime(fake_tensorrt, onnx_artifact, scene):
    onnx_path = onnx_artifact("rawio_argmax")
    engine = fake_tensorrt.engine(onnx_path)
    assert available_backends(engine)[0][:2] == ("tensorrt", True)
    frames = [scene(97, 131, 1), scene(64, 64, 2), scene(20, 300, 3)]
    with Segmenter(onnx_path) as reference:
        expected = [reference(f) for f in frames[:2]]
    with Segmenter(engine) as seg:
        assert seg.backend.name == "tensorrt" and seg.info()["thread_safe"] is False
        assert seg.profile == seg.meta.shapes  # read from the engine's profile
        assert seg.backend.reason.startswith("auto chose tensorrt")
        assert all(np.array_equal(seg(f), e) for f, e in zip(frames, expected))
        assert seg(frames[2]).shape == (20, 300) and seg.stats.resized == 1  # below min 32
        assert "TensorRT 10.3.0.26" in seg.backend.describe()
    assert fake_tensorrt.cudart.live == {}  # every pinned and device buffer freed


def test_tensorrt_plain_engine_gives_logits(fake_tensorrt, onnx_artifact, scene):
    onnx_path = onnx_artifact("plain")
    frame = scene(50, 70)
    with Segmenter(onnx_path) as reference, Segmenter(fake_tensorrt.engine(onnx_path)) as seg:
        assert np.array_equal(seg(frame), reference(frame))
        logits = seg.backend.infer(np.zeros((1, 3, 40, 40), np.float32))
        assert logits.shape == (1, seg.meta.num_classes, 40, 40) and logits.dtype == np.float32


def test_tensorrt_buffers_grow_on_demand_or_are_preallocated(fake_tensorrt, onnx_artifact):
    cudart = fake_tensorrt.cudart
    backend = TensorRTBackend(fake_tensorrt.engine(onnx_artifact("rawio_argmax")))
    probed = cudart.transfers  # opening probes the labels once (32×32): H2D + D2H
    assert probed == 2
    backend.infer(np.zeros((1, 32, 32, 3), np.uint8))
    assert cudart.allocations == 4  # pinned + device, for input and output
    backend.infer(np.zeros((1, 40, 48, 3), np.uint8))
    assert cudart.allocations == 4  # still fits (buffers grow in whole MiB)
    out = backend.infer(np.full((1, 700, 600, 3), 7, np.uint8))
    assert cudart.allocations == 6 and len(cudart.live) == 4  # the input grew, the old freed
    assert out.shape == (1, 700, 600) and cudart.transfers - probed == 6  # H2D + D2H per call
    backend.close()
    assert cudart.live == {}
    small = fake_tensorrt.engine(onnx_artifact("small_profile"), name="small.engine")
    before = cudart.allocations
    with TensorRTBackend(small, preallocate=True) as backend:
        assert cudart.allocations == before + 4
        backend.infer(np.zeros((1, 256, 256, 3), np.uint8))  # the profile's maximum
        assert cudart.allocations == before + 4
        with pytest.raises(InputError, match="outside the profile"):
            backend.infer(np.zeros((1, 300, 300, 3), np.uint8))


def test_tensorrt_refuses_another_gpu_or_release_before_deserialising(fake_tensorrt,
                                                                      onnx_artifact,
                                                                      monkeypatch):
    onnx_path = onnx_artifact("plain")
    other_gpu = fake_tensorrt.engine(onnx_path, gpu=("NVIDIA A100-SXM4-40GB", "8.0"))
    with pytest.raises(ModelFormatError, match=r"A100.*sm_80.*Fake GPU 3000.*fcn-edge build"):
        Segmenter(other_gpu)
    old = fake_tensorrt.engine(onnx_path, name="old.engine", tensorrt_version="8.6.1")
    with pytest.raises(ModelFormatError, match="TensorRT 8.6.1.*TensorRT 10.3.0.26"):
        TensorRTBackend(old)
    assert fake_tensorrt.trt.deserialized == 0 and fake_tensorrt.cudart.live == {}
    # The real probe, with TensorRT "installed": the listing says why, opening is refused.
    monkeypatch.setattr(trt_backend, "probe", REAL_TRT_PROBE)
    monkeypatch.setattr(trt_backend, "_has_module", lambda name: True)
    monkeypatch.setattr(trt_backend, "_tensorrt_version", lambda: "10.3.0.26")
    name, ok, reason = available_backends(other_gpu)[0]
    assert (name, ok) == ("tensorrt", False) and "rebuild it with `fcn-edge build" in reason
    with pytest.raises(ModelFormatError, match="A100"):
        open_backend(other_gpu)
    assert available_backends(fake_tensorrt.engine(onnx_path, name="ok.engine"))[0][1]


def test_tensorrt_damaged_engines_and_failures_are_clear(fake_tensorrt, onnx_artifact,
                                                         tmp_path):
    engine = fake_tensorrt.engine(onnx_artifact("plain"))
    truncated = tmp_path / "truncated.engine"
    truncated.write_bytes(engine.read_bytes()[:-1000])
    with pytest.raises(ModelFormatError, match="truncated"):
        Segmenter(truncated)
    header = {"meta": read_onnx_metadata(onnx_artifact("plain")).to_dict(),
              "tensorrt_version": "10.3.0.26",
              "gpu": {"name": fake_tensorrt.gpu[0], "compute_capability": fake_tensorrt.gpu[1]}}
    garbage = write_engine(tmp_path / "garbage.engine", b"not a plan", header)
    with pytest.raises(ModelFormatError, match="could not deserialise"):
        TensorRTBackend(garbage)
    fake_tensorrt.cudart.fail_malloc = True
    with TensorRTBackend(engine) as backend:
        with pytest.raises(FcnEdgeError, match="allocating .* 'images'.*MemoryAllocation"):
            backend.infer(np.zeros((1, 3, 32, 32), np.float32))
    assert fake_tensorrt.cudart.live == {}


def test_threads_share_one_tensorrt_segmenter_one_at_a_time(fake_tensorrt, onnx_artifact,
                                                            scene):
    frames = [scene(32 + 4 * i, 48, seed=i) for i in range(8)]
    with Segmenter(fake_tensorrt.engine(onnx_artifact("rawio_argmax"))) as seg:
        serial = [seg(f) for f in frames]
        with ThreadPoolExecutor(max_workers=4) as pool:
            parallel = list(pool.map(seg, frames))
    assert all(np.array_equal(a, b) for a, b in zip(serial, parallel))
    assert fake_tensorrt.trt.engines[0].max_concurrent == 1


# --- real engines and GPUs (skipped where absent) ------------------------------------------------

@pytest.mark.tensorrt
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None or not _gpu_here(),
                    reason='needs TensorRT and a CUDA GPU (pip install "fcn-edge[trt]"); '
                           'none here')
def test_a_real_engine_matches_onnxruntime(onnx_artifact, scene, tmp_path):
    from fcn_edge.export.tensorrt import BuildOptions, build_engine

    onnx_path = onnx_artifact("rawio_argmax")
    engine = build_engine(onnx_path, BuildOptions(precision="fp32", cache_dir=tmp_path,
                                                  output=tmp_path / "model.engine"))
    with Segmenter(engine, "tensorrt") as seg, Segmenter(onnx_path, "onnxruntime:cpu") as ref:
        for h, w in [(64, 64), (97, 131), (16, 16)]:
            frame = scene(h, w)
            assert (seg(frame) == ref(frame)).mean() >= 0.999


@pytest.mark.gpu
@pytest.mark.skipif("CUDAExecutionProvider" not in PROVIDERS,
                    reason='needs onnxruntime-gpu and a CUDA GPU (pip install "fcn-edge[gpu]")')
def test_onnxruntime_cuda_matches_the_cpu(onnx_artifact, scene):
    path = onnx_artifact("plain")
    with Segmenter(path, "onnxruntime:cuda") as gpu, Segmenter(path, "onnxruntime:cpu") as cpu:
        frame = scene(97, 131)
        assert (gpu(frame) == cpu(frame)).mean() >= 0.999


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)")
def test_torch_cuda_fp16_with_cuda_graphs(checkpoint, reference, scene):
    with Segmenter(checkpoint, "torch:cuda", cuda_graphs=True) as seg:
        assert not seg.backend.thread_safe and seg.meta.precision == "fp16"
        for h, w in [(64, 64), (97, 131), (64, 64)]:  # the repeat replays a captured graph
            frame = scene(h, w)
            assert (seg(frame) == reference(frame)).mean() >= 0.99  # fp16 rounding
