"""The files the bench runs: the checkpoint itself, its exports, and TensorRT engines.

Given a checkpoint, the exports are made here — each verified against PyTorch by the exporter as
always — into ``artifacts_dir``, one folder per IO and int8 flavour (``plain-int8cpu``,
``raw-int8tensorrt``, …). An export already there is reused when its metadata says it came from
this very checkpoint (sha256) with this fcn-edge version; anything else is exported again.
Engines are built (gated and cached) by :func:`~fcn_edge.export.tensorrt.build_engine` from the
ONNX of their own precision, IO and int8 flavour, and written beside it. Given an ONNX or an
engine, that file is the only artifact, and only rows that run it are planned.
"""
from __future__ import annotations

from pathlib import Path

from .. import __version__
from ..errors import BackendUnavailable, FcnEdgeError, InputError
from ..io import Log, file_sha256
from ..runtime.backends.optional import TRT_EXTRA, lazy_import
from ..runtime.onnx_file import read_onnx_metadata
from .plan import ArtifactKey


class ArtifactStore:
    """Makes and remembers the artifact behind each :class:`ArtifactKey`.

    Args:
        checkpoint: the checkpoint to export from (None when benchmarking a given file).
        given: ``(key, path)`` of a given ONNX/engine instead of a checkpoint.
        artifacts_dir: where exports (one folder per IO/int8 flavour) and engines go.
        calib: int8 calibration data (default: the checkpoint's own synthetic data).
    """

    def __init__(self, artifacts_dir: Path, checkpoint: Path | None = None,
                 given: tuple[ArtifactKey, Path] | None = None, calib: str | None = None,
                 log: Log = print) -> None:
        self.dir, self.checkpoint, self.calib, self.log = artifacts_dir, checkpoint, calib, log
        self._paths: dict[ArtifactKey, Path] = {}
        self._failed: dict[ArtifactKey, FcnEdgeError] = {}
        self._asked: set[ArtifactKey] = set()
        self._checkpoint_sha: str | None = None
        if checkpoint is not None:
            self._paths[ArtifactKey("checkpoint")] = checkpoint
        if given is not None:
            self._paths[given[0]] = given[1]

    def path(self, key: ArtifactKey) -> Path:
        """The file for ``key``, exporting or building it on first use; FcnEdgeError if that
        fails (remembered, so one broken export fails its rows once, not once per row; raised
        again as the same error, so a BackendUnavailable stays one)."""
        if key in self._paths:
            return self._paths[key]
        if key in self._failed:
            raise self._failed[key].with_traceback(None)
        try:
            if self.checkpoint is None:
                raise InputError("this row needs an export of the checkpoint; benchmark the "
                                 "checkpoint to compare every backend")
            if key.kind == "onnx":
                self._export(key)
            elif key.kind == "engine":
                self._paths[key] = self._build(key)
        except FcnEdgeError as exc:
            self._failed[key] = exc
            raise
        return self._paths[key]

    def failure(self, key: ArtifactKey | None) -> FcnEdgeError | None:
        """Why making ``key``'s file failed, if it did (e.g. the accuracy gate refused an
        engine)."""
        return self._failed.get(key) if key is not None else None

    def prepare(self, keys: list[ArtifactKey]) -> None:
        """Export the ONNX behind every one of ``keys`` (an engine's: its source), all those of
        one IO/int8 flavour together (one export call makes a flavour's fp32, fp16 and int8
        files). Engines are built later, by :meth:`path`."""
        engines = [k for k in keys if k.kind == "engine" and k not in self._paths]
        if engines and not _tensorrt_here():
            engines = []  # their rows say so (path); no export for engines not built here
        sources = [k for k in keys if k.kind == "onnx"] + [source_key(k) for k in engines]
        self._asked.update(sources)
        for key in sources:
            try:
                self.path(key)
            except FcnEdgeError:
                pass  # recorded; its rows report it

    def size_bytes(self, key: ArtifactKey) -> int | None:
        path = self._paths.get(key)
        return path.stat().st_size if path is not None and path.is_file() else None

    def any_onnx(self, io: str = "plain") -> Path | None:
        """An fp32 ONNX of ``io`` if one was made or given, else any ONNX (for FLOP counts)."""
        onnx = [(k, p) for k, p in self._paths.items() if k.kind == "onnx"]
        onnx.sort(key=lambda kp: (kp[0].io != io, kp[0].precision != "fp32"))
        return onnx[0][1] if onnx else None

    def _export(self, key: ArtifactKey) -> None:
        from ..export.exporter import ExportConfig, export

        folder = self._folder(key)
        wanted = self._wanted(key)
        reused = {p: self._reusable(folder, key.io, p) for p in wanted}
        if all(reused.values()):
            for precision, path in reused.items():
                self._paths[ArtifactKey("onnx", precision, key.io, key.int8_target)] = path
            return
        raw = key.io == "raw"
        config = ExportConfig(str(self.checkpoint), out_dir=str(folder),
                              fp16="fp16" in wanted, int8="int8" in wanted, calib=self.calib,
                              int8_target=key.int8_target, raw_io=raw, argmax=raw,
                              build_engine=False)
        self.log(f"exporting {'raw-IO + argmax' if raw else 'plain'} "
                 f"{'/'.join(wanted)} artifacts to {folder}")
        result = export(config, log=lambda line: self.log("  " + line))
        for precision in wanted:
            self._paths[ArtifactKey("onnx", precision, key.io, key.int8_target)] = \
                result.artifacts[precision]

    def _wanted(self, key: ArtifactKey) -> tuple[str, ...]:
        # Everything the plan asked for in this flavour, so one export makes them all.
        precisions = {k.precision for k in self._asked
                      if k.kind == "onnx" and (k.io, k.int8_target) == (key.io, key.int8_target)}
        precisions.add(key.precision)
        return tuple(p for p in ("fp32", "fp16", "int8") if p in precisions)

    def _reusable(self, folder: Path, io: str, precision: str) -> Path | None:
        from ..export.exporter import artifact_path

        assert self.checkpoint is not None
        path = artifact_path(folder, self.checkpoint, precision, io == "raw", io == "raw")
        if not path.is_file():
            return None
        try:
            meta = read_onnx_metadata(path)
        except FcnEdgeError:
            return None
        if self._checkpoint_sha is None:  # hashed once, not once per file checked
            self._checkpoint_sha = file_sha256(self.checkpoint)
        same = (meta.source_sha256 == self._checkpoint_sha
                and meta.fcn_edge_version == __version__)
        return path if same else None

    def _folder(self, key: ArtifactKey) -> Path:
        return self.dir / f"{key.io}-int8{key.int8_target}"

    def _build(self, key: ArtifactKey) -> Path:
        from ..export.tensorrt import BuildOptions, build_engine
        from ..export.trt_options import default_output_path

        require_tensorrt()  # before its source is exported: no export for a row that cannot run
        source = self.path(source_key(key))
        # Beside its source, as `fcn-edge build` writes it: the flavour's folder keeps an int8
        # engine of one flavour from replacing another's.
        output = self._folder(key) / default_output_path(source, key.precision).name
        engine = build_engine(source, BuildOptions(precision=key.precision, output=output))
        self.log(f"{key.precision} TensorRT engine from {source.name}: {engine}")
        return engine


def require_tensorrt() -> None:
    """BackendUnavailable, naming the extra to install, when TensorRT cannot be imported."""
    lazy_import("tensorrt", "building this row's TensorRT engine needs TensorRT ({exc}): "
                            + TRT_EXTRA)


def _tensorrt_here() -> bool:
    try:
        require_tensorrt()
    except BackendUnavailable:
        return False
    return True


def source_key(engine: ArtifactKey) -> ArtifactKey:
    """The ONNX an engine is built from: its own precision, IO and int8 flavour. fp16 from the
    fp16 ONNX (TensorRT 11 builds fp16 only that way, strongly typed; 10 just as well); int8
    from the ``tensorrt`` flavour's explicit Q/DQ (the only int8 TensorRT builds)."""
    return ArtifactKey("onnx", engine.precision, engine.io, engine.int8_target)
