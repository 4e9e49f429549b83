"""Several sources, one model: the frames of N sources batched into one Segmenter call.

    capture 0 ──▶ ┐                        ┌──▶ write 0 (source 0's sinks)
    capture 1 ──▶ ├──▶ infer (seg.batch) ──┼──▶ write 1
    capture 2 ──▶ ┘                        └──▶ write 2

Each source is a *lane*: the single-source pipeline's own state (``pipeline._Pipeline``: its
frame queue or latest-frame slot, its sinks and overlay options, its statistics and stage
times) with its capture and write stages unchanged, each in its own thread. Only inference is
shared: one thread takes the frame each lane has ready, waits at most ``batch_timeout`` for
the lanes that have none, never takes more than ``max_batch``, and segments them in one
``Segmenter.batch`` call — one engine call per frame size, in chunks the artifact's profile
allows (an artifact whose batch is fixed at 1 runs one call per frame, said once).

Fairness. A lane with no frame ready (a stalled camera, a stream that is reconnecting, a file
that ended) holds a batch back at most ``batch_timeout``. A live lane keeps only its latest
frame, so a source faster than the model drops its own stale frames, never another's. Lanes
are visited in turns that start one further at each batch, so with ``max_batch`` below the
number of sources each still gets its share.

Files are read at their own pace, one frame per batch slot: a file's lane always has its next
frame ready (its queue blocks the reader, as in a single-source run), so files run in step
with each other and with live sources, one frame each per batch, and every frame of a file is
segmented; a file that ends leaves the others running.

A lane fails alone: an error in its source or sinks stops that lane (its outputs are closed
complete), is logged at once, and the others go on; the first error is raised when they have
all finished. Ctrl-C or ``stop`` ends every lane, as in the single-source pipeline.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from ..errors import InputError
from ..io import Log
from .pipeline import _END, _POLL, _fill_in, _guard, _join, _Pipeline, _timed
from .sinks import Sink
from .sources import MAX_SKIPPED_NAMES, Frame, Source
from .stats import RunStats, StageTimes, rss_mb

__all__ = ["run_sources", "MultiRunStats"]


@dataclass
class MultiRunStats(RunStats):
    """The whole run's figures (sums over the sources; latency over every frame) and each
    source's own :class:`RunStats` in ``sources``, in the order the sources were given."""

    sources: list[RunStats] = field(default_factory=list)
    #: frames per ``Segmenter.batch`` call → how many calls had that many
    batches: dict[int, int] = field(default_factory=dict)

    @property
    def mean_batch(self) -> float:
        calls = sum(self.batches.values())
        return sum(n * c for n, c in self.batches.items()) / calls if calls else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["sources"] = [s.to_dict() for s in self.sources]
        data["batches"] = {str(n): c for n, c in sorted(self.batches.items())}
        return data

    def summary(self) -> str:
        """The single-source summary for the whole run, then one line per source."""
        calls = sum(self.batches.values())
        lines = [super().summary(),
                 f"{calls} batched model calls, {self.mean_batch:.2f} frames each on average"]
        for i, s in enumerate(self.sources):
            e2e = s.latency_ms.get("end_to_end", {})
            latency = (f", latency p50 {e2e['p50']:.1f} p99 {e2e['p99']:.1f} ms"
                       if e2e else "")
            end = " (interrupted)" if s.interrupted else ""
            lines.append(f"source {i} {s.source}: {s.frames} frames, {s.fps:.1f} fps, "
                         f"dropped {s.dropped}, {s.reconnects} reconnection attempts"
                         f"{latency}{end}")
        return "\n".join(lines)


class _LaneStop(threading.Event):
    """A lane's stop flag: set by the lane's own failure, and seen set once the run stops."""

    def __init__(self, run_stop: threading.Event) -> None:
        super().__init__()
        self._run_stop = run_stop

    def is_set(self) -> bool:
        return self._run_stop.is_set() or super().is_set()


class _Signalled:
    """A lane's frame queue that wakes the infer thread whenever a frame (or the end) comes."""

    def __init__(self, inner: Any, ready: threading.Event) -> None:
        self._inner, self._ready = inner, ready

    def put(self, item: Any, stop: threading.Event) -> bool:
        dropped = self._inner.put(item, stop)
        self._ready.set()
        return dropped

    def close(self, stop: threading.Event) -> None:
        self._inner.close(stop)
        self._ready.set()

    def get(self, timeout: float = _POLL) -> Any:
        return self._inner.get(timeout)


class _SharedTimes(StageTimes):
    """A lane's stage times, each also counted in the whole run's."""

    def __init__(self, total: StageTimes) -> None:
        super().__init__()
        self._run_times = total

    def add(self, stage: str, seconds: float) -> None:
        super().add(stage, seconds)
        self._run_times.add(stage, seconds)


class _Batcher:
    """The shared inference stage: batches of the lanes' ready frames into ``seg.batch``."""

    def __init__(self, lanes: list[_Pipeline], segmenter: Any, max_batch: int,
                 batch_timeout: float, stop: threading.Event, stats: MultiRunStats) -> None:
        self.lanes, self.segmenter = lanes, segmenter
        self.max_batch, self.batch_timeout = max_batch, batch_timeout
        self.stop, self.stats = stop, stats
        self.ready = threading.Event()      # set by every lane's put: a frame may be waiting
        self.open = list(range(len(lanes)))  # lanes whose frames may still come
        self.errors: list[BaseException] = []
        self._turn = 0

    def halt(self) -> None:
        """Stop every lane (thread-safe): readers also leave a reconnection wait."""
        self.stop.set()
        for lane in self.lanes:
            lane.source.stop()

    def guarded(self, stage: Callable[[], None], done: threading.Event) -> Callable[[], None]:
        """``stage`` whose error stops every lane: the model is every source's."""
        return _guard(stage, done, self.stats, self.errors, self.halt)

    def infer(self) -> None:
        inferred = [0] * len(self.lanes)
        try:
            while not self.stop.is_set():
                batch = self._gather()
                if batch is None:
                    break
                if batch:
                    self._segment(batch, inferred)
        finally:
            for i in list(self.open):
                self._end(i)

    def _segment(self, batch: list[tuple[int, Frame]], inferred: list[int]) -> None:
        frames = [replace(frame, source=i) for i, frame in batch]
        images = [frame.image for frame in frames]
        labels, seconds = _timed(self.segmenter.backend, lambda: self.segmenter.batch(images))
        self.stats.batches[len(frames)] = self.stats.batches.get(len(frames), 0) + 1
        for frame, result in zip(frames, labels):
            lane = self.lanes[frame.source]
            # Every frame of a batch waited for the whole call: its stages are the batch's.
            lane.results_q.put((frame, result, dict(seconds)), lane.stop)
            inferred[frame.source] += 1
            if lane.max_frames and inferred[frame.source] >= lane.max_frames:
                lane.enough.set()
                lane.source.stop()
                self._end(frame.source)

    def _gather(self) -> list[tuple[int, Frame]] | None:
        """The next batch: the frame of each open lane that has one, waiting at most
        ``batch_timeout`` after the first for the others; None once every lane has ended."""
        taken: dict[int, Frame] = {}
        deadline: float | None = None
        while not self.stop.is_set():
            self.ready.clear()  # before looking: a frame put while we look sets it again
            for i in self._turns():
                if i not in taken and len(taken) < self.max_batch:
                    self._take(i, taken)
            if len(taken) >= self.max_batch or not self.open or set(self.open) <= set(taken):
                break
            now = time.perf_counter()
            if taken and deadline is None:
                deadline = now + self.batch_timeout
            if deadline is not None and now >= deadline:
                break
            self.ready.wait(_POLL if deadline is None else deadline - now)
        self._turn += 1
        if not taken and (not self.open or self.stop.is_set()):
            return None
        return list(taken.items())

    def _turns(self) -> list[int]:
        """The open lanes, starting one further at each batch."""
        start = self._turn % len(self.lanes)
        order = [(start + k) % len(self.lanes) for k in range(len(self.lanes))]
        return [i for i in order if i in self.open]

    def _take(self, i: int, taken: dict[int, Frame]) -> None:
        lane = self.lanes[i]
        item = _END if lane.stop.is_set() else lane.frames_q.get(0.0)
        if item is _END:
            self._end(i)
        elif item is not None:
            taken[i] = item

    def _end(self, i: int) -> None:
        """Lane ``i`` gets no more frames: its writer finishes what it has and closes."""
        if i in self.open:
            self.open.remove(i)
            self.lanes[i].results_q.close(self.lanes[i].stop)


def run_sources(sources: Sequence[Source], segmenter: Any, sinks: Sequence[Sequence[Sink]], *,
                alpha: float = 0.5, max_frames: int | None = None, queue_size: int = 4,
                max_batch: int | None = None, batch_timeout: float = 0.01,
                on_progress: Callable[[MultiRunStats], None] | None = None,
                progress_every: float = 1.0, stop: threading.Event | None = None,
                task: str | None = None, legend: bool = False,
                log: Log | None = None) -> MultiRunStats:
    """Segment the frames of several ``sources`` in shared batches, each into its own
    ``sinks[i]``; see the module docstring.

    Args:
        sources: from :func:`~fcn_edge.runtime.sources.open_source`, each read in its own thread
            (live ones keep their latest frame; files give every frame).
        segmenter: a :class:`~fcn_edge.runtime.Segmenter` (``batch``, ``overlay``, ``backend``).
        sinks: one sequence of sinks per source; each closed when its source's run ends.
        alpha, queue_size, task, legend, on_progress, progress_every, stop: as for
            :func:`~fcn_edge.runtime.pipeline.run_pipeline` (``on_progress`` gets the whole
            run's figures).
        max_frames: stop each source after this many processed frames (None: at its end).
        max_batch: at most this many frames per batch (None: one per source).
        batch_timeout: seconds a batch waits, after its first frame, for the other sources.
        log: where a source's failure is reported when it happens (the others go on).

    Returns:
        The whole run's :class:`MultiRunStats`, each source's in ``stats.sources``.

    Raises:
        The first error of a source, its sinks or the model, once every source has stopped.
    """
    _check(sources, sinks, max_frames, max_batch, batch_timeout)
    stop = stop or threading.Event()
    total = StageTimes()
    lanes = [_Pipeline(source, segmenter, lane_sinks, alpha, max_frames, queue_size,
                       _LaneStop(stop), task, times=_SharedTimes(total), legend=legend)
             for source, lane_sinks in zip(sources, sinks)]
    stats = MultiRunStats(source=f"{len(lanes)} sources", backend=segmenter.backend.name,
                          live=any(s.live for s in sources))
    batcher = _Batcher(lanes, segmenter, max_batch or len(lanes), batch_timeout, stop, stats)
    for lane in lanes:
        lane.frames_q = _Signalled(lane.frames_q, batcher.ready)
    _say_capacity(segmenter, batcher.max_batch, log)
    stats.rss_start_mb = stats.rss_peak_mb = rss_mb()
    started = time.perf_counter()
    stages = ([(lane.capture, lane.guarded) for lane in lanes]
              + [(batcher.infer, batcher.guarded)]
              + [(lane.write, lane.guarded) for lane in lanes])
    done = [threading.Event() for _ in stages]
    threads = [threading.Thread(target=guard(fn, event), daemon=True,
                                name=f"fcn-edge-{fn.__name__}-{k}")
               for k, ((fn, guard), event) in enumerate(zip(stages, done))]
    for thread in threads:
        thread.start()
    try:
        _watch(lanes, batcher, done[-len(lanes):], on_progress, progress_every, log, started)
    except KeyboardInterrupt:
        stats.interrupted = True
        batcher.halt()
    finally:
        _join(done, threads, batcher.halt, stats)
        for lane in lanes:
            _fill_in(lane)
        _total(stats, lanes, total, started)
    errors = batcher.errors + [e for lane in lanes for e in lane.errors]
    if errors:
        raise errors[0]
    return stats


def _check(sources: Sequence[Source], sinks: Sequence[Sequence[Sink]], max_frames: int | None,
           max_batch: int | None, batch_timeout: float) -> None:
    if not sources or len(sinks) != len(sources):
        raise InputError(f"run_sources takes one or more sources and one list of sinks for "
                         f"each, got {len(sources)} sources and {len(sinks)} lists of sinks")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be ≥ 1 or None, got {max_frames}")
    if max_batch is not None and max_batch < 1:
        raise InputError(f"max_batch must be ≥ 1 or None (one frame per source), got "
                         f"{max_batch}")
    if not 0 <= batch_timeout < math.inf:
        raise InputError(f"batch_timeout must be a finite number of seconds ≥ 0, got "
                         f"{batch_timeout}")


def _say_capacity(segmenter: Any, max_batch: int, log: Log | None) -> None:
    """One line when the artifact runs fewer frames per call than a batch holds."""
    profile = getattr(segmenter, "profile", None)
    if profile is None or profile.max[0] >= max_batch or log is None:
        return
    per_call = profile.max[0]
    calls = -(-max_batch // per_call)
    log(f"the model takes at most {per_call} frame{'s' if per_call > 1 else ''} per call "
        f"(its profile {profile}): a batch of {max_batch} frames runs as {calls} calls"
        + ("; export with a dynamic batch (--shapes 1xHxW:NxHxW:NxHxW) for one call"
           if per_call == 1 else ""))


def _watch(lanes: list[_Pipeline], batcher: _Batcher, written: list[threading.Event],
           on_progress: Callable[[MultiRunStats], None] | None, progress_every: float,
           log: Log | None, started: float) -> None:
    """Watch the stages from the calling thread (where Ctrl-C arrives) until every writer
    has finished: memory, progress, and each lane's failure as it happens."""
    stats, reported = batcher.stats, set()
    next_progress = time.perf_counter() + progress_every
    while not all(event.wait(_POLL * 2 / len(written)) for event in written):
        stats.rss_peak_mb = max(stats.rss_peak_mb, rss_mb())
        for i, lane in enumerate(lanes):
            if lane.errors and i not in reported and log is not None:
                reported.add(i)
                log(f"source {i} {lane.source.description} stopped: {lane.errors[0]}; the "
                    f"other sources go on")
        if on_progress is not None and time.perf_counter() >= next_progress:
            next_progress += progress_every
            on_progress(_sums(stats, lanes, started))
    if batcher.stop.is_set() and not batcher.errors:
        stats.interrupted = True  # stopped through ``stop`` (a stage sets it only on errors)


def _sums(stats: MultiRunStats, lanes: list[_Pipeline], started: float) -> MultiRunStats:
    """``stats`` with the lanes' counts summed, as they stand now."""
    for name in ("frames", "captured", "dropped"):
        setattr(stats, name, sum(getattr(lane.stats, name) for lane in lanes))
    stats.seconds = time.perf_counter() - started
    return stats


def _total(stats: MultiRunStats, lanes: list[_Pipeline], total: StageTimes,
           started: float) -> None:
    """The whole run's figures once every stage has ended."""
    _sums(stats, lanes, started)
    stats.sources = [lane.stats for lane in lanes]
    stats.skipped = sum(lane.stats.skipped for lane in lanes)
    stats.skipped_files = [name for lane in lanes
                           for name in lane.stats.skipped_files][:MAX_SKIPPED_NAMES]
    stats.reconnects = sum(lane.stats.reconnects for lane in lanes)
    stats.latency_ms = total.summary()
    stats.rss_end_mb = rss_mb()
    stats.rss_peak_mb = max(stats.rss_peak_mb, stats.rss_end_mb)
