"""``fcn-edge run``: a model on a camera, video, images or stream, into videos, images and masks.

:class:`RunConfig` holds everything the command line sets; :func:`run` wires a source, a
:class:`~fcn_edge.runtime.Segmenter` and the sinks into the pipeline, prints the end summary
and writes the ``--stats`` JSON. The model file describes itself (classes, palette,
preprocessing), so nothing else is needed — but an RGB-D or RGB-HHA artifact (paper §5) needs
each frame's depth or HHA: ``--depth DIR``, ``--hha DIR``, or ``--input NAME=DIR`` for any
registered modality (``runtime/modalities.py``, read by ``runtime/paired.py``). For a
multi-head artifact the overlays show one head (``--head TASK``, default the first) and
``--save-masks`` writes every head's masks, one subfolder per task.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

from ..errors import InputError
from ..io import Log, atomic_path, check_writable
from .bounds import Bound, Rule, Threads, check_bounds
from .modalities import MODALITIES, file_reader
from .paired import with_extras
from .pipeline import RunStats, run_pipeline
from .serve import check_address, serve_sink
from .sinks import (VIDEO_SUFFIXES, ImageDirSink, ImageFileSink, MaskDirSink, Sink, VideoSink,
                    WindowSink)
from .capture import CAPTURE_BOUNDS, CaptureSettings, check_capture
from .source_spec import MAX_CAMERA_INDEX, check_camera, source_spec
from .shapes import MAX_BATCH
from .sources import IMAGE_SUFFIXES, ImageSource, Source, open_source, redact

__all__ = ["RunConfig", "input_folders", "output_kind", "run", "MAX_QUEUE_SIZE"]

#: Frames a queue between two stages may hold: each is a whole frame (25 MB at 4K), and a
#: deeper queue only adds latency.
MAX_QUEUE_SIZE = 64


@dataclass(frozen=True)
class RunConfig:
    """What ``fcn-edge run`` does; each field is the CLI flag of the same name (``inputs``:
    ``--depth``, ``--hha``, ``--input``)."""

    model: str                          # an exported artifact (.onnx, .engine, ...)
    source: str | None = None           # video, image, folder, glob, URL or camera index
    camera: int | None = None           # --camera N, instead of ``source``
    backend: str = "auto"
    output: str | None = None           # .mp4/.avi/... video, an image file, or a folder
    save_masks: str | None = None       # folder of palette PNGs
    show: bool = False
    alpha: float = 0.5
    max_frames: int | None = None
    stats: str | None = None            # JSON file for the end statistics
    live: bool | None = None            # None: cameras and URLs are live, files are not
    threads: int | None = None          # engine threads (CPU backends); None: the default
    queue_size: int = 4
    reconnect_timeout: float = 30.0
    progress_every: float = 5.0         # seconds between progress lines; 0: none
    head: str | None = None             # the task overlays show (multi-head; None: the first)
    #: (modality, folder) pairs: each frame's other inputs, e.g. (("depth", "depth/"),) for an
    #: RGB-D artifact (--depth DIR, --hha DIR, --input NAME=DIR); see ``input_folders``.
    inputs: tuple[tuple[str, str], ...] = ()
    legend: bool = False                # a class legend on the overlays (--legend)
    #: Several sources instead of ``source`` (``fcn-edge run SRC1 SRC2 …``): their frames run
    #: in shared batches, each source into its own outputs (``runtime/multi_run.py``).
    sources: tuple[str, ...] = ()
    max_batch: int | None = None        # several sources: frames per batch (None: one each)
    batch_timeout: float = 10.0         # several sources: ms a batch waits for late sources
    serve: str | None = None            # [HOST:]PORT of a live view in a browser (--serve)
    #: The camera mode and RTSP options asked for (``runtime/capture.py``; None: defaults).
    input_width: int | None = None      # V4L2 and csi:// cameras
    input_height: int | None = None
    input_fps: float | None = None
    input_codec: str | None = None      # V4L2 cameras: MJPG, YUYV, ...
    rtsp_latency: int | None = None     # rtsp://: ms of FFmpeg's reorder wait
    rtsp_transport: str | None = None   # rtsp://: tcp or udp

    #: Each numeric field's range, checked by ``check`` and read by the flag of the same name.
    BOUNDS: ClassVar[Mapping[str, Rule]] = {
        "camera": Bound(0, MAX_CAMERA_INDEX), "alpha": Bound(0.0, 1.0, integer=False),
        "max_frames": Bound(1, 10**12), "threads": Threads(),
        "queue_size": Bound(1, MAX_QUEUE_SIZE), "max_batch": Bound(1, MAX_BATCH),
        "batch_timeout": Bound(0.0, 60_000.0, integer=False,
                               zero="each batch takes the frames ready at once"),
        "reconnect_timeout": Bound(0.0, 86_400.0, integer=False),
        "progress_every": Bound(0.0, 86_400.0, integer=False, zero="no progress lines"),
        **CAPTURE_BOUNDS}

    @property
    def extras(self) -> dict[str, str]:
        """Modality → folder, for the modalities given."""
        return dict(self.inputs)

    @property
    def capture(self) -> CaptureSettings:
        """The capture settings of the flags (checked when made)."""
        return CaptureSettings(self.input_width, self.input_height, self.input_fps,
                               self.input_codec, self.rtsp_latency, self.rtsp_transport)

    def check(self) -> None:
        """Refuse contradictory or out-of-range settings, a source OpenCV would crash or hang
        on, and outputs that cannot be written — before anything is opened or loaded."""
        if sum((self.source is not None, bool(self.sources), self.camera is not None)) != 1:
            raise InputError("give exactly one of SOURCE or --camera N (or several SOURCEs)")
        if self.camera is not None:
            check_camera(self.camera)
        for spec in self.sources or ((self.source,) if self.camera is None else (self.camera,)):
            check_capture(self.capture, source_spec(spec))  # a flag the source has no use for
        self._check_inputs()
        self._check_numbers()
        if self.sources:  # per-source outputs
            from .multi_run import check_several
            check_several(self)
        else:
            self._check_outputs()

    def _check_inputs(self) -> None:
        names = [modality for modality, _ in self.inputs]
        for modality in names:
            file_reader(modality)  # an unknown name fails before anything opens
        twice = [m for m in dict.fromkeys(names) if names.count(m) > 1]
        if twice:
            raise InputError(f"{twice[0]} is given twice (--{twice[0]} DIR, --input "
                             f"{twice[0]}=DIR): give each input once")
        if self.extras and (self.camera is not None or (
                self.source is not None and source_spec(self.source).kind != "path")):
            flags = " and ".join(f"--{m}" for m in self.extras)
            raise InputError(f"{flags} work{'s' if len(self.extras) == 1 else ''} only with "
                             f"image sources for now (a folder, glob or image file), not "
                             f"cameras or streams: record frames to a folder "
                             f"and pass {flags} folders of files named like them")

    def _check_numbers(self) -> None:
        check_bounds(self, self.BOUNDS, flags=True)

    def _check_outputs(self) -> None:
        """Every output writable now: a ten-minute run must not fail at its end on --stats."""
        if self.output:
            check_writable(self.output, "--output", folder=output_kind(self.output) == "folder")
        if self.save_masks:
            check_writable(self.save_masks, "--save-masks", folder=True)
        if self.stats:
            check_writable(self.stats, "--stats")
        if self.serve is not None:  # a port in use is one line now, not after the model loads
            check_address(self.serve)


def output_kind(output: str) -> str:
    """What ``--output`` names: ``video`` (a video suffix), ``image`` (an image suffix), or
    ``folder`` — a name that ends with ``/``, an existing folder, or a name without a suffix.
    Any other suffix is refused: ``out.xyz`` is more likely a typo than a folder's name."""
    path = Path(output)
    if output.endswith(("/", os.sep)) or path.is_dir() or not path.suffix:
        return "folder"
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    raise InputError(f"--output {output}: unknown suffix {path.suffix}; give a video "
                     f"({', '.join(VIDEO_SUFFIXES)}), an image "
                     f"({', '.join(sorted(IMAGE_SUFFIXES))}), or a folder — end it with / "
                     f"({output}/) for a folder named so")


def input_folders(pairs: Sequence[str] = (),
                  flags: Mapping[str, str | None] | None = None) -> tuple[tuple[str, str], ...]:
    """``RunConfig.inputs`` from the command line: the ``--NAME DIR`` flags (modality →
    folder or None) and ``--input NAME=DIR`` strings, in that order."""
    inputs = [(m, folder) for m, folder in (flags or {}).items() if folder]
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or not name or not folder:
            raise InputError(f"--input {pair}: give NAME=DIR, e.g. --input depth=depth/ "
                             f"(modalities: {', '.join(m for m in MODALITIES if m != 'rgb')})")
        inputs.append((name.strip(), folder))
    return tuple(inputs)


def run(config: RunConfig, log: Log = print, stop: threading.Event | None = None) -> RunStats:
    """Run the model over the source into the outputs; see :class:`RunConfig`.

    Ctrl-C (or ``stop.set()``) ends the run cleanly: outputs complete, statistics returned
    with ``interrupted=True``. Raises :class:`~fcn_edge.errors.FcnEdgeError` subclasses for
    bad inputs, unreadable models and missing engines.
    """
    config.check()
    if config.sources:  # several sources batched through the model: runtime/multi_run.py
        from .multi_run import run_several
        return run_several(config, log, stop)
    spec: int | str = config.camera if config.camera is not None else str(config.source)
    source = open_source(spec, live=config.live, reconnect_timeout=config.reconnect_timeout,
                         log=log, capture=config.capture)
    try:
        source = with_extras(source, config.extras, log)
        if config.output:  # refuse a wrong --output before the (slower) model load
            _output_kind(config.output, source)
        segmenter, backend = _open_segmenter(config)
    except BaseException:
        source.close()
        raise
    try:
        task = _check_model_inputs(config, segmenter)
        sinks = _make_sinks(config, source, segmenter, log)
        log(f"fcn-edge run: {Path(config.model).name} on {backend.name}, "
            f"{'live ' if source.live else ''}{source.description}"
            + (f" ({len(source)} frames)" if len(source) else "")
            + (f", overlays of head {task}" if task else ""))
        stats = run_pipeline(source, segmenter, sinks, alpha=config.alpha,
                             max_frames=config.max_frames, queue_size=config.queue_size,
                             on_progress=_progress(log) if config.progress_every > 0 else None,
                             progress_every=config.progress_every or 1.0, stop=stop, task=task,
                             legend=config.legend)
    finally:
        # The pipeline's reader releases the source itself, in its own thread; here it is
        # only closed when the pipeline never started.
        if not source.stopped:
            source.close()
        segmenter.close()
        backend.close()  # a Segmenter does not close a backend it was handed
    _report(config, stats, sinks, log)
    return stats


def _progress(log: Log) -> Callable[[RunStats], None]:
    return lambda s: log(f"  {s.frames} frames, {s.fps:.1f} fps, {s.dropped} dropped")


def _open_segmenter(config: RunConfig) -> tuple[Any, Any]:
    from .backends import open_backend
    from .segmenter import Segmenter

    options: dict[str, Any] = {}
    if config.threads is not None:
        options["threads"] = config.threads
    backend = open_backend(config.model, config.backend, **options)
    try:
        return Segmenter(backend), backend
    except BaseException:
        backend.close()
        raise


def _check_model_inputs(config: RunConfig, segmenter: Any) -> str | None:
    """Refuse a model whose inputs the run cannot supply, or a --depth/--hha/--head it has no
    use for; returns the task the overlays show (None for a one-task model)."""
    name, inputs, tasks = Path(config.model).name, segmenter.inputs, segmenter.tasks
    takes = " + ".join(inputs)
    for modality in (m for m in inputs if m != "rgb"):
        if modality not in config.extras:
            raise InputError(f"{name} takes {takes}: pass --{modality} DIR, a folder of "
                             f"{MODALITIES[modality].files} named like the images")
    for modality in config.extras:
        if modality not in inputs:
            raise InputError(f"--{modality} given but {name} takes only {takes}: leave "
                             f"--{modality} out")
    if config.head is None:
        return tasks[0] if tasks else None
    if not tasks:
        raise InputError(f"--head {config.head}: {name} has one task; --head chooses among "
                         f"the heads of a multi-head model")
    if config.head not in tasks:
        raise InputError(f"--head {config.head}: {name} has no such head; its tasks are "
                         f"{', '.join(tasks)}")
    return config.head


def _make_sinks(config: RunConfig, source: Source, segmenter: Any, log: Log) -> list[Sink]:
    sinks: list[Sink] = []
    if config.output:
        sinks.append(_output_sink(config.output, source, log))
    if config.save_masks and segmenter.tasks:  # every head's masks, a folder per task
        sinks.extend(MaskDirSink(Path(config.save_masks) / task, segmenter.palette_of(task),
                                 log=log, task=task) for task in segmenter.tasks)
    elif config.save_masks:
        sinks.append(MaskDirSink(config.save_masks, segmenter.meta.palette, log=log))
    if config.show:
        sinks.append(WindowSink(f"fcn-edge: {source.description}", log=log))
    if config.serve is not None:
        sinks.append(serve_sink(config.serve, segmenter, config.head, source.description, log))
    return sinks


def _output_kind(output: str, source: Source) -> str:
    """:func:`output_kind`, and an image only for a single-image source."""
    kind = output_kind(output)
    if kind == "image" and not (isinstance(source, ImageSource) and len(source) == 1):
        raise InputError(f"--output {output} is one image but {source.description} has several "
                         f"frames; give a folder or a video file ({', '.join(VIDEO_SUFFIXES)})")
    return kind


def _output_sink(output: str, source: Source, log: Log) -> Sink:
    kind, path = _output_kind(output, source), Path(output)
    if kind == "video":
        return VideoSink(path, fps=source.fps, log=log)
    return ImageFileSink(path) if kind == "image" else ImageDirSink(path)


def _report(config: RunConfig, stats: RunStats, sinks: list[Sink], log: Log) -> None:
    """The end summary, where the outputs went, and the --stats file."""
    log(stats.summary())
    if stats.frames == 0:
        log("no frames were processed: check the source")
    for sink in sinks:
        where = getattr(sink, "path", None) or getattr(sink, "directory", None)
        if where is not None and getattr(sink, "frames", 0):
            log(f"wrote {sink.frames} frames to {where}")  # type: ignore[attr-defined]
    if config.stats:
        settings = asdict(config)
        settings["source"] = redact(config.source) if config.source else None
        settings["sources"] = [redact(spec) for spec in config.sources]
        data = {"fcn_edge_run": stats.to_dict(), "config": settings}
        with atomic_path(config.stats) as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        log(f"statistics: {config.stats}")
