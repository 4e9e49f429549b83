"""Latency measurement that is fair between backends; the machine and its sgemm ceiling.

* Warm-up calls first (first calls allocate, JIT-select kernels, build TensorRT/ORT caches).
* Every backend's ``infer`` returns host memory, so a call returns only when the device is
  done: GPU work is synchronised by the copy back, never left in flight.
* Medians and nearest-rank p99, not means: one descheduled call on a shared machine moves a
  mean, not a median.
* :func:`interleaved` alternates the contenders round by round, so a slow spell of the machine
  (another process, thermal throttling) hits all of them alike: the basis of the ratios that
  ``tests/regression`` holds, which stay meaningful on a noisy machine where absolute times
  do not.
"""
from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..errors import InputError


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call over ``runs`` timed calls."""

    p50: float
    p99: float
    mean: float
    runs: int

    @property
    def fps(self) -> float:
        """Calls per second at the median latency."""
        return 1000.0 / self.p50 if self.p50 > 0 else math.inf


def summarize(samples_ms: list[float]) -> Timing:
    """Median, nearest-rank 99th percentile and mean of ``samples_ms``."""
    if not samples_ms:
        raise InputError("no timed calls to summarise")
    ordered = sorted(samples_ms)
    rank = max(1, math.ceil(0.99 * len(ordered)))
    return Timing(float(np.median(ordered)), ordered[rank - 1], float(np.mean(ordered)),
                  len(ordered))


def measure(call: Callable[[], Any], runs: int = 50, warmup: int = 3,
            max_seconds: float = 20.0, min_runs: int = 5) -> Timing:
    """Time ``call()`` ``runs`` times after ``warmup`` calls; stop early once ``max_seconds``
    of timed calls have passed, but never before ``min_runs`` calls."""
    _check_counts(runs, warmup)
    for _ in range(warmup):
        call()
    samples: list[float] = []
    spent = 0.0
    while len(samples) < runs and (spent < max_seconds or len(samples) < min(min_runs, runs)):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e3)
        spent += samples[-1] / 1e3
    return summarize(samples)


def interleaved(calls: dict[str, Callable[[], Any]], runs: int = 20, warmup: int = 2,
                max_seconds: float = math.inf, min_runs: int = 5,
                block: int = 1) -> dict[str, Timing]:
    """Time several contenders in alternating turns of ``block`` calls (A B C A B C … for 1;
    A A B B … for 2) after each one's warm-up; one :class:`Timing` per name. Use it for
    ratios measured in one run. As in :func:`measure`, turns stop early once one contender's
    timed calls add up to ``max_seconds``, but never before ``min_runs`` calls.

    Turns of several calls suit engines whose worker threads spin after a call (ONNX Runtime
    by default): on a 2-core machine the last contender's spinning threads slow the next one's
    first call of its turn, which a median over longer turns leaves out.
    """
    _check_counts(runs, warmup)
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    spent = dict.fromkeys(calls, 0.0)
    done = 0
    while done < runs and (max(spent.values()) < max_seconds or done < min(min_runs, runs)):
        turn = min(max(1, block), runs - done)
        for name, call in calls.items():
            for _ in range(turn):
                start = time.perf_counter()
                call()
                samples[name].append((time.perf_counter() - start) * 1e3)
                spent[name] += samples[name][-1] / 1e3
        done += turn
    return {name: summarize(values) for name, values in samples.items()}


def machine(threads: int) -> dict:
    """What a timing was measured on: platform, CPU, cores, the threads used, fcn-edge's
    version, the date and time."""
    return {"platform": platform.platform(), "machine": platform.machine(),
            "processor": _cpu_name(), "cpus": os.cpu_count(), "threads": threads,
            "fcn_edge": __version__, "date": date.today().isoformat(),
            "started": time.strftime("%H:%M:%S")}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def sgemm_gflops(threads: int, n: int = 1024, seconds: float = 1.0) -> float:
    """Achieved GFLOP/s of an n×n×n float32 matrix product on ``threads`` CPU threads: the
    practical ceiling of dense arithmetic on this machine, to set model GFLOP/s against.

    Uses PyTorch's BLAS when torch is installed (its thread count can be set), else numpy's.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    try:
        import torch
    except ImportError:
        return _gflops(lambda: a @ b, n, seconds)  # numpy's BLAS, its own thread setting
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        return _gflops(lambda: torch.mm(ta, tb), n, seconds)
    finally:
        torch.set_num_threads(before)  # the setting is process-wide: give it back


def _gflops(product: Callable[[], Any], n: int, seconds: float) -> float:
    timing = measure(product, runs=1000, warmup=2, max_seconds=seconds)
    return 2.0 * n ** 3 / (timing.p50 / 1e3) / 1e9


def _check_counts(runs: int, warmup: int) -> None:
    if runs < 1 or warmup < 0:
        raise InputError(f"runs must be ≥ 1 and warmup ≥ 0, got runs={runs}, warmup={warmup}")
