"""ONNX Runtime CPU sessions for the export's checks: an in-memory model in, a callable out.

The exporter's parity and latency figures run here, on a model not yet written to disk;
files are run by the runtime's backends (``runtime/backends/onnxruntime.py``)."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import onnx
import onnxruntime as ort


def ort_session(model: onnx.ModelProto | str | Path, threads: int = 0) -> ort.InferenceSession:
    """A CPU session; ``threads=0`` lets ONNX Runtime use every core."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # warnings about unused initialisers are not ours to fix
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def ort_run(model: onnx.ModelProto | str | Path
            ) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
    """``run(feed) -> outputs by name`` on ONNX Runtime CPU (every input and output)."""
    session = ort_session(model)
    names = [o.name for o in session.get_outputs()]

    def run(feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, dict(feed))))

    return run


def ort_latency(model: onnx.ModelProto | str | Path, feed: Mapping[str, np.ndarray],
                runs: int = 10, warmup: int = 2) -> float:
    """Median wall time of one inference on ``feed``, in milliseconds, after ``warmup`` runs."""
    run = ort_run(model)
    for _ in range(warmup):
        run(feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(feed)
        times.append((time.perf_counter() - start) * 1e3)
    return float(statistics.median(times))
