"""The models one bench run times: the model, and with ``--baseline`` a second one through the
same rows.

A ratio measured across two runs of a shared machine says as much about the machine's mood as
about the models; measured in one run, with each combination's model row and baseline row open
together and timed in alternating turns on the same frame (``runner._combination_rows``),
a slow spell hits both alike. So ``fcn-edge bench NEW.pt --baseline
resnet18.pt`` gives each row of the model ``vs_baseline`` = the baseline's end-to-end median /
this row's (above 1: faster than the baseline), and the baseline's own rows beside them.

Each model is a :class:`Contender`: its file, the checkpoint its ΔmIoU is measured against,
the store that exports it, the rows planned for it and its metadata. The baseline's exports
go to their own folder (``<artifacts>/baseline``), so two checkpoints both called ``best.pt``
never overwrite each other's ONNX files.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BackendUnavailable, FcnEdgeError, InputError
from ..io import Log
from ..runtime.backends import artifact_kind, available_backends
from ..runtime.engine_file import engine_meta, read_engine_header
from ..runtime.metadata import ArtifactMeta
from ..runtime.onnx_file import read_onnx_metadata
from . import accuracy as acc
from .artifacts import ArtifactStore
from .plan import Combo, combos_for_artifact, given_key, plan_combos

if TYPE_CHECKING:
    from .runner import BenchConfig, BenchRow


@dataclass(frozen=True)
class Contender:
    """One model the bench runs, and what each of its rows needs."""

    path: Path
    reference: Path | None            # PyTorch fp32 checkpoint of its ΔmIoU; None: none
    store: ArtifactStore
    combos: list[Combo]
    meta: ArtifactMeta


def contender(config: BenchConfig, model: Path, reference: str | None, artifacts: Path,
              log: Log) -> Contender:
    """``model`` read and planned for ``config``'s rows; nothing exported yet. InputError for
    a model the bench cannot measure (more than RGB in, more than one head)."""
    kind = artifact_kind(model)
    ref = Path(reference) if reference else (model if kind == "checkpoint" else None)
    if kind == "checkpoint":
        store = ArtifactStore(artifacts, checkpoint=model, calib=config.calib, log=log)
        combos = plan_combos(config.backends, config.precisions, config.io)
        meta = _checkpoint_meta(model)
    else:
        meta = _artifact_meta(model, kind)
        given = given_key(kind, meta)
        store = ArtifactStore(artifacts, given=(given, model), log=log)
        combos = combos_for_artifact(kind, meta.precision, given.io, config.backends,
                                     given.int8_target)
    if meta.inputs or meta.heads:
        raise InputError(f"{model} takes {' + '.join(meta.modalities)} and has "
                         f"{len(meta.heads) or 1} head(s); fcn-edge bench measures RGB, "
                         f"one-head models. For the paper's §5 nets use "
                         f"benchmarks/bench_multitask.py or benchmarks/bench_fusion.py, and "
                         f"`fcn-edge eval` for each task's metrics")
    return Contender(model, ref, store, combos, meta)


def baseline_contender(config: BenchConfig, artifacts: Path, log: Log) -> Contender:
    """The ``--baseline`` model, its exports under ``artifacts/baseline``; an error that says
    it is about the baseline."""
    assert config.baseline is not None
    try:
        return contender(config, Path(config.baseline), None, artifacts / "baseline", log)
    except FcnEdgeError as exc:
        raise type(exc)(f"--baseline {exc}") from None


def blocked(c: Combo, store: ArtifactStore) -> tuple[tuple[str, str] | None, Path | None]:
    """``((status, reason), None)`` when ``c`` cannot run here, else ``(None, its file)``."""
    if c.artifact is None:
        return ("unsupported", c.why), None
    try:
        path = store.path(c.artifact)
    except BackendUnavailable as exc:  # e.g. no TensorRT to build the engine with
        return ("unavailable", str(exc)), None
    except FcnEdgeError as exc:
        return ("failed", f"no artifact: {exc}"), None
    available = {name: (ok, why) for name, ok, why in available_backends(path)}
    ok, why = available.get(c.backend_name, (False, "not a backend for this file"))
    return (None, path) if ok else (("unavailable", why), None)


def baseline_combo(base: Contender, c: Combo) -> tuple[Combo, tuple[str, str] | None,
                                                        Path | None]:
    """The baseline's combination matching the model's ``c`` (same backend, precision, IO),
    and why it cannot run or its file."""
    same = next((b for b in base.combos if (b.backend, b.precision, b.io) ==
                 (c.backend, c.precision, c.io)), None)
    if same is None:
        return c, ("unsupported", f"the baseline {base.path.name} is one artifact "
                                  f"({base.meta.precision}); bench its checkpoint for every "
                                  f"row"), None
    why, path = blocked(same, base.store)
    return same, why, path


def baseline_data(data: acc.EvalSet, model: ArtifactMeta, base: ArtifactMeta) -> acc.EvalSet:
    """The model's evaluation frames for the baseline: with their labels when both models have
    the same classes, else unlabelled (agreement with its own reference only)."""
    if tuple(model.classes) == tuple(base.classes):
        return data
    return replace(data, labels=None)


def vs_baseline(rows: list[BenchRow], baseline_rows: list[BenchRow]) -> None:
    """Each row's ``vs_baseline``: the baseline's end-to-end median over this row's, for the
    same backend, precision, IO and size."""
    base = {(r.backend, r.precision, r.io, r.size): r.e2e_p50_ms for r in baseline_rows}
    for r in rows:
        theirs = base.get((r.backend, r.precision, r.io, r.size))
        if theirs and r.e2e_p50_ms:
            r.vs_baseline = round(theirs / r.e2e_p50_ms, 2)


def _checkpoint_meta(path: Path) -> ArtifactMeta:
    try:
        from ..export.artifact_meta import artifact_meta
        from ..models import load_model
    except ModuleNotFoundError as exc:
        if exc.name not in ("torch", "onnx"):
            raise
        raise BackendUnavailable(f"benchmarking a checkpoint needs {exc.name}: pip install "
                                 f"'fcn-edge[train]', or bench an exported .onnx") from None
    return artifact_meta(load_model(path).eval(), path, raw_io=False, argmax=False,
                         shapes=None, options={})


def _artifact_meta(path: Path, kind: str) -> ArtifactMeta:
    """The given artifact's own metadata, read without opening an engine."""
    if kind == "engine":
        return engine_meta(read_engine_header(path), path)
    return read_onnx_metadata(path)
