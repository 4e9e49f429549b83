"""The run loop: capture, inference and writing in three threads joined by bounded queues.

    capture ──frames──▶ infer ──results──▶ write
    (decode)            (Segmenter)        (overlay, sinks)

The threads overlap because the heavy work in each (decoding, the Segmenter's normalisation,
engine and argmax, colour blending and encoding) runs in OpenCV, numpy or the engine, all of
which release the GIL. The middle thread does nothing but ``segmenter(frame)``, so a run goes
about as fast as the Segmenter alone.

Files are processed frame by frame in order: a full queue blocks the reader. Live sources keep
only the *latest* frame before inference: a frame the engine had no time for is replaced by a
newer one and counted as dropped, so latency stays one frame deep however slow the model is.

Ctrl-C (or ``stop.set()``) ends the threads, closes the sinks (the video is finished and
renamed) and returns the statistics with ``interrupted=True``. An exception in a stage stops
the others the same way and is then raised to the caller. No queue operation blocks without a
timeout, so nothing can hang on a stopped neighbour.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import InputError
from .sinks import Result, Sink, StopRequested
from .sources import Frame, Source
from .stats import STAGES, RunStats, StageTimes, rss_mb

__all__ = ["run_pipeline", "RunStats", "StageTimes", "STAGES", "rss_mb"]


_END = object()          # end of stream, passed down the queues
_POLL = 0.05             # seconds between checks of the stop event in blocking calls
_SHUTDOWN_TIMEOUT = 15.0  # longest wait for a stage to finish after a stop
_logger = logging.getLogger(__name__)


class _LatestSlot:
    """A one-frame mailbox for live sources: a new frame replaces an unread one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False

    def put(self, item: Any, stop: threading.Event) -> bool:
        """Store ``item``; True when it replaced (dropped) a frame nobody had taken."""
        with self._cond:
            dropped = self._item is not None
            self._item = item
            self._cond.notify()
            return dropped

    def close(self, stop: threading.Event) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def get(self, timeout: float = _POLL) -> Any:
        """The frame, ``_END`` once closed and empty, or None after waiting ``timeout``."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            if self._item is not None:
                item, self._item = self._item, None
                return item
            return _END if self._closed else None


class _Channel:
    """A bounded FIFO whose blocking calls give up when the run is stopped."""

    def __init__(self, size: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))

    def put(self, item: Any, stop: threading.Event) -> bool:
        """Wait for room; False (nothing dropped, nothing stored) when the run stops first."""
        while not stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return False
            except queue.Full:
                continue
        return False

    def close(self, stop: threading.Event) -> None:
        self.put(_END, stop)

    def get(self, timeout: float = _POLL) -> Any:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None


def _segment_timed(segmenter: Any, image: np.ndarray,
                   extras: Mapping[str, np.ndarray] | None = None) -> tuple[Any, dict[str, float]]:
    """Labels (task → labels for a multi-head artifact) and the seconds spent in preprocess,
    infer and postprocess inside the Segmenter; ``extras`` are the frame's other modalities
    (``depth`` …, paper §5), passed to the Segmenter by name.

    The split is exact: the backend notes when each of its calls starts and ends
    (:meth:`~fcn_edge.runtime.backends.base.BackendBase.take_call_times`), in this thread.
    """
    return _timed(segmenter.backend,
                  lambda: segmenter(image, **extras) if extras else segmenter(image))


def _timed(backend: Any, call: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """``call()``'s result and its seconds in preprocess, infer and postprocess, from the
    times ``backend`` noted for the calls ``call`` made to it (one frame or one batch)."""
    backend.take_call_times()  # start counting at this call
    started = time.perf_counter()
    labels = call()
    ended = time.perf_counter()
    calls = backend.take_call_times()
    return labels, {"preprocess": calls.first_start - started, "infer": calls.seconds,
                    "postprocess": ended - calls.last_end}


class _Pipeline:
    """State shared by the three stage threads of one run."""

    def __init__(self, source: Source, segmenter: Any, sinks: Sequence[Sink], alpha: float,
                 max_frames: int | None, queue_size: int, stop: threading.Event,
                 task: str | None = None, times: StageTimes | None = None,
                 legend: bool = False) -> None:
        self.source, self.segmenter, self.sinks = source, segmenter, list(sinks)
        self.alpha, self.max_frames = float(alpha), max_frames
        self.overlay_options: dict[str, Any] = {"task": task} if task is not None else {}
        if legend:  # only when asked: a Segmenter stand-in need not take the keyword
            self.overlay_options["legend"] = True
        self.need_overlay = any(getattr(s, "needs_overlay", True) for s in self.sinks)
        self.stop = stop
        self.enough = threading.Event()      # max_frames reached: stop reading, drain the rest
        self.frames_q: _LatestSlot | _Channel = (_LatestSlot() if source.live
                                                 else _Channel(queue_size))
        self.results_q = _Channel(queue_size)
        self.errors: list[BaseException] = []
        self.times = times if times is not None else StageTimes()
        self.stats = RunStats(source=source.description, backend=segmenter.backend.name,
                              live=source.live)
        self.started = time.perf_counter()
        for sink in self.sinks:  # sinks that show live figures (the live view) get the run's
            getattr(sink, "bind", lambda stats, times: None)(self.stats, self.times)

    def halt(self) -> None:
        """Stop every stage (thread-safe): the reader also leaves a reconnection wait."""
        self.stop.set()
        self.source.stop()

    def guarded(self, stage: Callable[[], None], done: threading.Event) -> Callable[[], None]:
        """``stage`` that records its error, stops the others and sets ``done`` at its end.

        The caller waits on ``done``, not on ``Thread.join``: a KeyboardInterrupt that lands
        in ``join`` makes Python 3.11 mark a still-running thread as stopped (CPython
        gh-90882), and the sinks would then be used after the caller thinks they are closed.
        """
        return _guard(stage, done, self.stats, self.errors, self.halt)

    def capture(self) -> None:
        """Read frames into the first queue (files: every one; live: the latest)."""
        frames = iter(self.source)
        try:
            while not (self.stop.is_set() or self.enough.is_set()):
                started = time.perf_counter()
                frame = next(frames, None)
                if frame is None:
                    break
                self.times.add("capture", time.perf_counter() - started)
                self.stats.captured += 1
                if self.frames_q.put(frame, self.stop):
                    self.stats.dropped += 1
                if not self.source.live and self.max_frames \
                        and self.stats.captured >= self.max_frames:
                    break
        finally:
            self.source.close()  # released by the thread that read from it
            self.frames_q.close(self.stop)

    def infer(self) -> None:
        """Segment each frame taken from the first queue; nothing else runs in this thread."""
        inferred = 0
        try:
            while not self.stop.is_set():
                frame = self.frames_q.get()
                if frame is None:
                    continue
                if frame is _END:
                    break
                labels, seconds = _segment_timed(self.segmenter, frame.image, frame.extras)
                self.results_q.put((frame, labels, seconds), self.stop)
                inferred += 1
                if self.max_frames and inferred >= self.max_frames:
                    self.enough.set()
                    self.source.stop()
                    break
        finally:
            self.results_q.close(self.stop)

    def write(self) -> None:
        """Draw each overlay and hand the result to every sink; close them at the end."""
        try:
            while not self.stop.is_set():
                item = self.results_q.get()
                if item is None:
                    continue
                if item is _END:
                    break
                self._write_one(*item)
        finally:
            self.stats.seconds = time.perf_counter() - self.started
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception as exc:  # noqa: BLE001 - close the others, then report
                    self.errors.append(exc)

    def _write_one(self, frame: Frame, labels: Any, seconds: dict[str, float]) -> None:
        started = time.perf_counter()
        overlay = None
        if self.need_overlay:
            overlay = self.segmenter.overlay(frame.image, labels, alpha=self.alpha,
                                             **self.overlay_options)
        written = time.perf_counter()
        # postprocess = the Segmenter's (argmax, resizing back) + colouring the overlay.
        seconds["postprocess"] = seconds.get("postprocess", 0.0) + written - started
        result = Result(frame, labels, overlay)
        for sink in self.sinks:
            sink.write(result)
        done = time.perf_counter()
        for stage, value in seconds.items():
            self.times.add(stage, value)
        self.times.add("write", done - written)
        self.times.add("end_to_end", done - frame.timestamp)
        self.stats.frames += 1


def _guard(stage: Callable[[], None], done: threading.Event, stats: RunStats,
           errors: list[BaseException], halt: Callable[[], None]) -> Callable[[], None]:
    """``stage`` run so that a StopRequested ends the run as interrupted, any other error is
    kept in ``errors``, either calls ``halt``, and ``done`` is set at the end."""
    def run() -> None:
        try:
            stage()
        except StopRequested:
            stats.interrupted = True
            halt()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller after shutdown
            errors.append(exc)
            halt()
        finally:
            done.set()
    return run


def run_pipeline(source: Source, segmenter: Any, sinks: Sequence[Sink], *, alpha: float = 0.5,
                 max_frames: int | None = None, queue_size: int = 4,
                 on_progress: Callable[[RunStats], None] | None = None,
                 progress_every: float = 1.0,
                 stop: threading.Event | None = None, task: str | None = None,
                 legend: bool = False) -> RunStats:
    """Segment every frame of ``source`` (the latest ones, for live sources) into ``sinks``.

    Args:
        source: from :func:`~fcn_edge.runtime.sources.open_source`.
        segmenter: a :class:`~fcn_edge.runtime.Segmenter` (or anything with ``__call__``,
            ``overlay`` and a ``backend``); see :func:`_segment_timed` for how its time is
            split into stages.
        sinks: from :mod:`fcn_edge.runtime.sinks`; closed when the run ends, however it ends.
        alpha: overlay opacity of the class colours.
        max_frames: stop after this many processed frames (None: until the source ends).
        queue_size: depth of the queues between stages (files; live sources keep one frame).
        on_progress: called from the calling thread every ``progress_every`` seconds with the
            running statistics; raising KeyboardInterrupt there ends the run like Ctrl-C.
        stop: set it from any thread to end the run as Ctrl-C does.
        task: the head the overlays show, for a multi-head artifact (paper §5; None: the
            first). Sinks get every head's labels (``Result.labels`` is then a dict).
        legend: draw the class legend on the overlays (``Segmenter.overlay``'s
            ``legend``: the shown head's classes; beyond 12, those in the frame).

    Returns:
        The run's :class:`RunStats`; ``interrupted`` is True after Ctrl-C or ``stop``.

    Raises:
        Whatever a stage raised, after every stage has stopped and the sinks are closed.
    """
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be ≥ 1 or None, got {max_frames}")
    run = _Pipeline(source, segmenter, sinks, alpha, max_frames, queue_size,
                    stop or threading.Event(), task, legend=legend)
    run.stats.rss_start_mb = run.stats.rss_peak_mb = rss_mb()
    done = [threading.Event() for _ in range(3)]
    threads = [threading.Thread(target=run.guarded(fn, event), name=f"fcn-edge-{fn.__name__}",
                                daemon=True)
               for fn, event in zip((run.capture, run.infer, run.write), done)]
    for thread in threads:
        thread.start()
    try:
        _wait(run, done[-1], on_progress, progress_every)
    except KeyboardInterrupt:
        run.stats.interrupted = True
        run.halt()
    finally:
        _shutdown(run, done, threads)
    if run.errors:
        raise run.errors[0]
    return run.stats


def _wait(run: _Pipeline, written: threading.Event,
          on_progress: Callable[[RunStats], None] | None, progress_every: float) -> None:
    """Watch the stages from the calling thread, where Ctrl-C arrives."""
    next_progress = time.perf_counter() + progress_every
    while not written.wait(_POLL * 2):
        run.stats.rss_peak_mb = max(run.stats.rss_peak_mb, rss_mb())
        if on_progress is not None and time.perf_counter() >= next_progress:
            next_progress += progress_every
            run.stats.seconds = time.perf_counter() - run.started
            on_progress(run.stats)
    if run.stop.is_set() and not run.errors:
        run.stats.interrupted = True  # stopped through ``stop`` (stages only set it on errors)


def _shutdown(run: _Pipeline, done: list[threading.Event],
              threads: list[threading.Thread]) -> None:
    """Let the stages finish (they stop at their next queue poll) and fill in the figures."""
    _join(done, threads, run.halt, run.stats)
    _fill_in(run)


def _join(done: list[threading.Event], threads: list[threading.Thread],
          halt: Callable[[], None], stats: RunStats) -> None:
    """Wait (bounded) for every stage, the last ones (the writers) first; ``halt`` them if
    they were still running; a Ctrl-C meanwhile marks ``stats`` interrupted."""
    deadline = time.monotonic() + _SHUTDOWN_TIMEOUT
    if not all(event.is_set() for event in done):
        halt()
    for event in reversed(done):  # the writer first: it finishes the output files
        while not event.is_set() and time.monotonic() < deadline:
            try:
                event.wait(max(0.0, deadline - time.monotonic()))
            except KeyboardInterrupt:  # Ctrl-C while finishing: finish anyway (bounded wait)
                stats.interrupted = True
                halt()
    if not all(event.is_set() for event in done):  # daemon threads: cannot block exit
        _logger.warning("a stage is still busy %g s after the stop", _SHUTDOWN_TIMEOUT)
    else:
        try:
            for thread in threads:  # each is past its last statement: this takes no time
                thread.join(1.0)
        except KeyboardInterrupt:
            stats.interrupted = True


def _fill_in(run: _Pipeline) -> None:
    """The run's figures from its stage times and its source, once its stages ended."""
    run.stats.latency_ms = run.times.summary()
    run.stats.rss_end_mb = rss_mb()
    run.stats.rss_peak_mb = max(run.stats.rss_peak_mb, run.stats.rss_end_mb)
    run.stats.skipped = run.source.skipped
    run.stats.skipped_files = list(run.source.skipped_names)
    run.stats.reconnects = run.source.reconnects
    if not run.stats.seconds:
        run.stats.seconds = time.perf_counter() - run.started
