"""Run statistics: per-stage latency percentiles, throughput, drops and memory.

Timing samples are bounded per stage (a reservoir), so a week-long run keeps flat memory.
"""
from __future__ import annotations

import os
import random
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["RunStats", "StageTimes", "STAGES", "rss_mb"]

STAGES = ("capture", "preprocess", "infer", "postprocess", "pre+post", "write",
          "end_to_end")
_SAMPLES = 20_000        # timings kept per stage: bounded, so week-long runs stay flat


def rss_mb() -> float:
    """This process's resident memory in MiB (Linux /proc; elsewhere the peak, via resource)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource
    except ImportError:
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if os.uname().sysname == "Darwin" else peak / 1024  # bytes vs KiB


class StageTimes:
    """Durations per stage in bounded memory: exact count, mean and max; percentiles from a
    uniform reservoir sample (Vitter's algorithm R), exact up to ``capacity`` frames."""

    def __init__(self, capacity: int = _SAMPLES) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._samples: dict[str, np.ndarray] = {}
        self._count: dict[str, int] = {}
        self._total: dict[str, float] = {}
        self._max: dict[str, float] = {}
        self._rng = random.Random(0)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            n = self._count.get(stage, 0)
            if n == 0:
                self._samples[stage] = np.empty(self.capacity, np.float64)
                self._total[stage] = self._max[stage] = 0.0
            slot = n if n < self.capacity else self._rng.randrange(n + 1)
            if slot < self.capacity:
                self._samples[stage][slot] = seconds
            self._count[stage] = n + 1
            self._total[stage] += seconds
            self._max[stage] = max(self._max[stage], seconds)

    def summary(self) -> dict[str, dict[str, float]]:
        """{stage: {count, mean, p50, p95, p99, max}} in milliseconds, stages in run order."""
        out: dict[str, dict[str, float]] = {}
        with self._lock:
            for stage in sorted(self._count, key=lambda s: (STAGES + (s,)).index(s)):
                n = self._count[stage]
                kept = self._samples[stage][:min(n, self.capacity)] * 1e3
                p50, p95, p99 = np.percentile(kept, [50, 95, 99])
                out[stage] = {"count": n, "mean": round(self._total[stage] / n * 1e3, 3),
                              "p50": round(float(p50), 3), "p95": round(float(p95), 3),
                              "p99": round(float(p99), 3),
                              "max": round(self._max[stage] * 1e3, 3)}
        return out


@dataclass
class RunStats:
    """What a run did; ``to_dict()`` is the ``--stats`` JSON, ``summary()`` the end report."""

    source: str = ""
    backend: str = ""
    live: bool = False
    frames: int = 0            # processed and written
    captured: int = 0          # read from the source
    dropped: int = 0           # live: stale frames replaced by newer ones before inference
    skipped: int = 0           # unreadable inputs reported and skipped
    skipped_files: list[str] = field(default_factory=list)  # their names (the first 100)
    reconnects: int = 0        # live: reconnection attempts
    seconds: float = 0.0
    interrupted: bool = False  # Ctrl-C, a stop request or a key in the window
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_peak_mb: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fps"] = round(self.fps, 3)
        data["seconds"] = round(self.seconds, 4)
        for key in ("rss_start_mb", "rss_end_mb", "rss_peak_mb"):
            data[key] = round(data[key], 2)
        return data

    def summary(self) -> str:
        """A few readable lines: counts, speed, per-stage latency, memory."""
        end = " (interrupted)" if self.interrupted else ""
        lines = [f"{self.frames} frames in {self.seconds:.2f} s, {self.fps:.1f} fps{end}"
                 f" — {self.source}" + (f" on {self.backend}" if self.backend else ""),
                 f"dropped {self.dropped} stale frames, skipped {self.skipped} unreadable "
                 f"inputs, {self.reconnects} reconnection attempts"]
        if self.skipped_files:
            shown = ", ".join(self.skipped_files[:5])
            more = self.skipped - min(5, len(self.skipped_files))
            lines.append(f"skipped: {shown}" + (f" and {more} more" if more > 0 else ""))
        if self.latency_ms:
            lines.append(f"{'latency ms':<12}{'p50':>9}{'p95':>9}{'p99':>9}")
            for stage, t in self.latency_ms.items():
                lines.append(f"{stage:<12}{t['p50']:>9.2f}{t['p95']:>9.2f}{t['p99']:>9.2f}")
        lines.append(f"memory {self.rss_start_mb:.0f} → {self.rss_end_mb:.0f} MiB "
                     f"(peak {self.rss_peak_mb:.0f})")
        return "\n".join(lines)
