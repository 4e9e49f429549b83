"""``fcn-edge run SRC1 SRC2 …``: several sources through one model, each into its own outputs.

The run command's wiring for :func:`~fcn_edge.runtime.multi.run_sources` (``RunConfig.sources``).
Every source gets the outputs a single-source run would write, under a name of its own,
``<position>-<name>`` (``0-street``, ``1-camera2``, ``2-frames``), so that two sources of one
name still write apart and the folders sort in the order the sources were given:

* ``--output DIR/``: a folder of overlays per source, ``DIR/0-street/000000.jpg`` …
* ``--output 'out/{source}.mp4'``: a video per source, ``out/0-street.mp4`` … (or one image
  per single-image source, ``{source}.png``). One video or image name for several sources is
  refused in one line that says what to give.
* ``--save-masks DIR``: ``DIR/0-street/000000.png`` … (``{source}`` in the name places it).
* ``--stats F``: the whole run's figures and each source's (``sources``: a list, in order).
* ``--show``: a window per source; ``--serve``: one live view showing every source's stream.
"""
from __future__ import annotations

import re
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import InputError
from ..io import Log
from .multi import MultiRunStats, run_sources
from .run import (RunConfig, _check_model_inputs, _make_sinks, _open_segmenter, _output_kind,
                  _progress, _report, output_kind)
from .serve import LiveView, check_address, parse_address
from .capture import pipeline_elements
from .source_spec import source_spec
from .sources import Source, open_source, redact

__all__ = ["PLACEHOLDER", "source_name", "source_outputs", "check_several", "run_several"]

#: Where a per-source output name puts each source's name.
PLACEHOLDER = "{source}"
_GLOB = re.compile(r"[*?\[]")


def source_name(index: int, spec: str) -> str:
    """``<index>-<name>``: a source's name in its outputs — a file's or folder's stem, a
    camera's index or device (``camera0``, ``video2``), a CSI sensor (``csi0``), a pipeline's
    first element (``v4l2src``), a stream's path (never its password), kept to letters,
    digits, ``._-``."""
    checked = source_spec(spec)
    target = checked.target
    if checked.kind == "camera":
        name = f"camera{target}" if isinstance(target, int) else Path(str(target)).name
    elif checked.kind == "csi":
        name = f"csi{target}"
    elif checked.kind == "pipeline":
        name = next(iter(pipeline_elements(str(target))), "pipeline")
    elif checked.kind == "stream":
        parts = urlsplit(redact(str(target)))
        name = Path(parts.path).stem or parts.hostname or "stream"
    else:
        path = Path(str(target).rstrip("/\\"))
        name = path.parent.name if _GLOB.search(path.name) else path.stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "source"
    return f"{index}-{name}"


def _place(template: str, name: str) -> str:
    """``template`` for one source: ``{source}`` replaced, or a subfolder ``name/`` of it."""
    if PLACEHOLDER in template:
        return template.replace(PLACEHOLDER, name)
    return f"{Path(template) / name}/"


def source_outputs(config: RunConfig) -> list[RunConfig]:
    """One single-source config per source: its spec, and its own ``--output`` and
    ``--save-masks`` (see the module docstring)."""
    configs = []
    for i, spec in enumerate(config.sources):
        name = source_name(i, spec)
        configs.append(replace(
            config, source=spec, sources=(),
            output=_place(config.output, name) if config.output else None,
            save_masks=_place(config.save_masks, name) if config.save_masks else None,
            serve=None))  # one live view shows every source: see ``_live_view``
    return configs


def check_several(config: RunConfig) -> None:
    """Refuse what several sources cannot do, and outputs that cannot be written — before
    anything is opened (``RunConfig.check`` calls it when ``sources`` are given)."""
    if config.extras:
        flags = " and ".join(f"--{m}" for m in config.extras)
        raise InputError(f"{flags} work{'s' if len(config.extras) == 1 else ''} with one source: "
                         f"run each source with its own folder{'s' if len(config.extras) > 1 else ''}")
    if config.serve is not None:  # one view for all: a port in use is one line now
        check_address(config.serve)
    if config.output and PLACEHOLDER not in config.output:
        kind = output_kind(config.output)
        if kind != "folder":
            stem = Path(config.output).stem
            raise InputError(f"--output {config.output} is one {kind} but {len(config.sources)} "
                             f"sources are given: give a folder (--output "
                             f"{Path(config.output).with_suffix('')}/, a folder of "
                             f"overlays per source) or a name with {PLACEHOLDER} (--output "
                             f"'{Path(config.output).with_name(stem + '-' + PLACEHOLDER)}"
                             f"{Path(config.output).suffix}', one {kind} per source)")
    for one in source_outputs(config):  # each source's outputs, as its own run checks them
        one._check_outputs()


def run_several(config: RunConfig, log: Log = print,
                stop: threading.Event | None = None) -> MultiRunStats:
    """``run`` for ``config.sources``: each opened (a wrong one fails before the model
    loads), batched through one model, each into its own outputs; see the module docstring."""
    configs = source_outputs(config)
    sources: list[Source] = []
    try:
        for one in configs:
            sources.append(open_source(one.source, live=config.live,
                                       reconnect_timeout=config.reconnect_timeout, log=log,
                                       capture=config.capture))
            if one.output:
                _output_kind(one.output, sources[-1])
        segmenter, backend = _open_segmenter(config)
    except BaseException:
        for source in sources:
            source.close()
        raise
    try:
        task = _check_model_inputs(config, segmenter)
        sinks = [_make_sinks(one, source, segmenter, log) for one, source in zip(configs, sources)]
        if config.serve is not None:
            for lane, view_sink in zip(sinks, _live_view(config, segmenter, task, sources, log)):
                lane.append(view_sink)
        _say_start(config, configs, sources, backend, task, log)
        stats = run_sources(sources, segmenter, sinks, alpha=config.alpha,
                            max_frames=config.max_frames, queue_size=config.queue_size,
                            max_batch=config.max_batch, batch_timeout=config.batch_timeout / 1e3,
                            on_progress=_progress(log) if config.progress_every > 0 else None,
                            progress_every=config.progress_every or 1.0, stop=stop, task=task,
                            legend=config.legend, log=log)
    finally:
        for source in sources:  # each lane's reader releases its own; these never started
            if not source.stopped:
                source.close()
        segmenter.close()
        backend.close()
    _report(config, stats, [sink for lane in sinks for sink in lane], log)
    return stats


def _live_view(config: RunConfig, segmenter: Any, task: str | None, sources: list[Source],
               log: Log) -> list[Any]:
    """``--serve``: one live view on the page of which every source is a stream."""
    legend = zip(segmenter.classes_of(task), segmenter.palette_of(task))
    view = LiveView(parse_address(config.serve), legend=legend, log=log,
                    title=f"fcn-edge: {len(sources)} sources" + (f" ({task})" if task else ""))
    return [view.sink(i, source.description) for i, source in enumerate(sources)]


def _say_start(config: RunConfig, configs: list[RunConfig], sources: list[Source],
               backend: Any, task: str | None, log: Log) -> None:
    batch = config.max_batch or len(sources)
    log(f"fcn-edge run: {Path(config.model).name} on {backend.name}, {len(sources)} sources "
        f"in batches of up to {batch} frames (waiting at most {config.batch_timeout:g} ms for a "
        f"late source)" + (f", overlays of head {task}" if task else ""))
    for i, (one, source) in enumerate(zip(configs, sources)):
        outputs = ", ".join(o for o in (one.output, one.save_masks) if o)
        log(f"  source {i}: {'live ' if source.live else ''}{source.description}"
            + (f" ({len(source)} frames)" if len(source) else "")
            + (f" → {outputs}" if outputs else ""))
