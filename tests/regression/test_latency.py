"""Latency regression as ratios measured in one run: two contenders timed in alternating rounds
(``fcn_edge.bench.timing.interleaved``) on the same input with the same threads, so that a slow
spell of a shared machine hits both alike. Absolute times are never asserted.

A ratio is measured up to ATTEMPTS times and holds when one attempt is within its bound: noise
(another process, a descheduled round) only ever adds time to whichever contender it hits, so it
must be absent from one attempt only, while a real regression is slower in every attempt."""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import pytest

from fcn_edge.bench.timing import Timing, interleaved
from fcn_edge.data import render_scene
from fcn_edge.runtime import Segmenter, open_backend, parse_shapes
from fcn_edge.runtime.processing import frames_to_input

THREADS = os.cpu_count() or 2
ATTEMPTS = 3


def _frame(height: int, width: int) -> np.ndarray:
    """A real-looking H×W×3 uint8 BGR frame (a procedural scene), fixed."""
    rgb = render_scene(np.random.default_rng(0), height, width)[0]
    return np.ascontiguousarray(rgb[..., ::-1])


def _ratio(calls: dict[str, Callable[[], object]], bound: float, runs: int) -> float:
    """Median latency of the first of ``calls`` over the second's, from one ``interleaved``
    run; the best of up to ATTEMPTS runs, stopping at the first within ``bound``. Prints
    every attempt."""
    first, second = calls
    ratios = []
    for attempt in range(1, ATTEMPTS + 1):
        timings: dict[str, Timing] = interleaved(calls, runs=runs, warmup=2)
        ratios.append(timings[first].p50 / timings[second].p50)
        print(f"\nattempt {attempt}: {first} p50 {timings[first].p50:.1f} ms, {second} p50 "
              f"{timings[second].p50:.1f} ms ({runs} rounds, {THREADS} threads): ratio "
              f"{ratios[-1]:.3f} (bound {bound})")
        if ratios[-1] <= bound:
            break
    return min(ratios)


def test_onnxruntime_fp32_is_not_slower_than_pytorch_eager(regression_checkpoint,
                                                           regression_artifacts,
                                                           restore_torch_threads):
    """Model only: the same normalised N×3×H×W batch into ONNX Runtime's CPU session of the
    fp32 artifact and into the checkpoint's eager PyTorch model (both give logits). At 128×256
    ORT took ~0.35× PyTorch's time on a shared 2-core machine."""
    with open_backend(regression_artifacts["fp32"], "onnxruntime:cpu", threads=THREADS) as ort, \
            open_backend(regression_checkpoint.checkpoint, "torch:cpu", threads=THREADS) as eager:
        meta = ort.meta
        batch = frames_to_input(_frame(128, 256), meta.mean, meta.std, meta.color_order, "bgr")
        assert not meta.argmax and not eager.meta.argmax  # logits both: the same work
        ratio = _ratio({"onnxruntime:cpu fp32": lambda: ort.infer(batch),
                        "torch:cpu eager": lambda: eager.infer(batch)}, bound=1.0, runs=20)
    assert ratio <= 1.0, f"ONNX Runtime fp32 takes {ratio:.2f}× PyTorch eager's time"


def test_raw_io_argmax_is_not_slower_end_to_end(regression_artifacts):
    """Segmenter calls on one BGR frame: the raw-IO + argmax artifact (normalisation and argmax
    in the graph, no host copies) against the plain one (numpy normalisation, logits back,
    numpy argmax). The 5 % allowance is measurement noise on a shared machine: the two run the
    same convolutions, and the lean one saves only the host pre- and post-processing, a few
    per cent of a frame on a CPU (BENCHMARKS.md: 13.0 against 12.8 fps at 256×512), so a
    bound of 1.0 would fail on noise alone. 256×512 keeps the convolutions' share, and with
    it the noise, no larger than at deployment sizes."""
    frame = _frame(256, 512)
    with Segmenter(regression_artifacts["rawio_argmax"], "onnxruntime:cpu",
                   threads=THREADS) as lean, \
            Segmenter(regression_artifacts["fp32"], "onnxruntime:cpu", threads=THREADS) as plain:
        assert lean.meta.raw_io and lean.meta.argmax and not plain.meta.raw_io
        assert (lean(frame) == plain(frame)).mean() >= 0.999  # the same answer
        ratio = _ratio({"raw-IO + argmax": lambda: lean(frame), "plain": lambda: plain(frame)},
                       bound=1.05, runs=15)
    assert ratio <= 1.05, f"the raw-IO + argmax artifact takes {ratio:.2f}× the plain one's time"


# --- GPU (skipped with the backend's reason where absent) -------------------------------------

@pytest.mark.gpu
def test_torch_cuda_fp16_is_not_slower_than_fp32(regression_checkpoint, require_backend):
    """Model only, on the GPU: fp16 autocast against fp32, the same host batch (both give
    labels: argmax on the GPU is the torch:cuda default)."""
    checkpoint = regression_checkpoint.checkpoint
    require_backend(checkpoint, "torch:cuda")
    with open_backend(checkpoint, "torch:cuda", fp16=True) as fp16, \
            open_backend(checkpoint, "torch:cuda", fp16=False) as fp32:
        meta = fp32.meta
        batch = frames_to_input(_frame(512, 1024), meta.mean, meta.std, meta.color_order, "bgr")
        ratio = _ratio({"torch:cuda fp16": lambda: fp16.infer(batch),
                        "torch:cuda fp32": lambda: fp32.infer(batch)}, bound=1.0, runs=30)
    assert ratio <= 1.0, f"fp16 autocast takes {ratio:.2f}× fp32's time"


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_tensorrt_is_not_slower_than_torch_cuda(regression_checkpoint, gpu_artifact,
                                                require_backend, tmp_path):
    """End to end on one BGR frame: a native fp16 engine of the raw-IO + argmax artifact
    (tuned for this size) against the checkpoint in PyTorch on the GPU (fp16 autocast,
    argmax on the GPU): both fp16, both moving only labels back."""
    from fcn_edge.export.tensorrt import BuildOptions, build_engine

    checkpoint = regression_checkpoint.checkpoint
    require_backend(checkpoint, "torch:cuda")
    require_backend(checkpoint, "tensorrt")
    engine = build_engine(gpu_artifact("rawio_argmax_fp16"), BuildOptions(
        precision="fp16", shapes=parse_shapes("256x512:512x1024:1024x2048"),
        cache_dir=tmp_path / "cache", output=tmp_path / "model.engine"))
    frame = _frame(512, 1024)
    with Segmenter(engine, "tensorrt") as trt, Segmenter(checkpoint, "torch:cuda") as torch_gpu:
        ratio = _ratio({"tensorrt fp16": lambda: trt(frame),
                        "torch:cuda fp16": lambda: torch_gpu(frame)}, bound=1.0, runs=30)
    assert ratio <= 1.0, f"the TensorRT engine takes {ratio:.2f}× PyTorch's time on the GPU"
