"""A fetched zoo file made into the file every fcn-edge command deploys, once, in the cache.

* torchvision's ``.pth`` is a bare state dict: it is loaded strictly into the entry's model and
  written as an fcn-edge checkpoint (``save_checkpoint``) whose meta carries the entry's
  classes, palette, mean/std and colour order, and whose ``source`` records the ``.pth``'s
  name, URL and hash. It is reused while it is newer than the ``.pth`` and records the
  same hash. Needs torch.
* pytorch-fcn's ``fcnNs_from_caffe.pth`` (the released Caffe nets: C×C×k×k upsampling
  kernels, as Caffe stores them) goes the same way, loaded through ``apply_weights``, which
  takes each upsampling's diagonal as fcn-edge's depthwise kernel; its source records the MD5
  pytorch-fcn publishes.
* jetson-inference's ``.tar.gz`` is unpacked (``archive.py``) and its ONNX graph made
  self-describing by ``fcn-edge import``'s code (``export/import_onnx.py``): the archive's
  ``classes.txt`` and ``colors.txt`` win over the entry's lists (they are what that file was
  trained with), mean/std/RGB are segNet's, and the coarse grid gets its in-graph resize. The
  folder is reused while it records the archive's hash, the imported file while it records the
  hash of the graph it came from. A folder unpacked elsewhere (jetson-inference's download
  script deletes its archives) may stand in for the archive. Needs onnx and onnxruntime.

Every write is atomic: a prepared file is whole or absent, so a crash at any moment leaves a
cache that the next call completes.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import FcnEdgeError, InputError, ModelFormatError
from ..io import Log, atomic_path, check_writable, file_sha256
from ..models import trust
from ..models.archive import jetson_palette, read_colors, unpack
from ..models.download import CACHE_ENV, hash_algorithm, hash_hex
from ..models.registry import resolve
from ..models.zoo import PretrainedEntry, get


def prepare(name: str, *, weights: str | Path | None = None, cache: str | Path | None = None,
            sha256: str | None = None, progress: bool = True, log: Log = print,
            timeout: float = 30.0) -> Path:
    """The file every fcn-edge command deploys for entry ``name``, made once in the cache:
    :func:`fcn_edge.models.zoo.fetch` (same arguments), then torchvision's state dict written
    as an fcn-edge checkpoint (needs torch), or jetson-inference's archive unpacked and its
    ONNX made self-describing (needs onnx and onnxruntime). Reused while its source is unchanged. A
    first file's hash is recorded only once it prepared: a damaged one is never trusted."""
    entry = get(name)
    if not entry.loadable:
        raise InputError(f"{name}: fcn-edge has no model for this file yet; fcn-edge fetch "
                         f"{name} downloads it as published")
    verified = trust.fetch_verified(entry, cache, weights, sha256, progress=progress, log=log,
                                    timeout=timeout)
    make = prepare_archive if entry.archive else prepare_checkpoint
    path = make(entry, verified.path, verified.digest, cache, log)
    trust.record(entry, verified, log)
    return path


def prepare_checkpoint(entry: PretrainedEntry, source: Path, digest: str,
                       cache: str | Path | None, log: Log) -> Path:
    """``<cache>/<source>/<model>.pt``: ``source`` (a state dict, already verified) as an
    fcn-edge checkpoint."""
    target = entry.prepared_path(cache)
    if _current_checkpoint(target, source, digest):
        return target
    check_writable(target, _cache_flag(cache))
    from ..models.checkpoint import CheckpointMeta, save_checkpoint

    log(f"{entry.name}: writing {source.name} as an fcn-edge checkpoint, {target}")
    model = _load_state(entry, source)
    meta = CheckpointMeta(classes=entry.classes, palette=_rows(entry.palette_colors()),
                          mean=entry.mean, std=entry.std, color_order=entry.color_order)
    save_checkpoint(model.eval(), target, meta=meta,
                    source={"zoo": entry.name, "file": source.name, "url": entry.url,
                            hash_algorithm(digest): hash_hex(digest)})
    return target


def _current_checkpoint(target: Path, source: Path, digest: str) -> bool:
    """Whether ``target`` was written from this very file: newer than it, with its hash."""
    if not target.is_file() or target.stat().st_mtime < source.stat().st_mtime:
        return False
    import torch

    try:
        saved = torch.load(target, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable or not ours: written again
        return False
    recorded = saved.get("source") if isinstance(saved, dict) else None
    return (isinstance(recorded, dict)
            and recorded.get(hash_algorithm(digest)) == hash_hex(digest))


def _load_state(entry: PretrainedEntry, source: Path):
    """The entry's model with ``source``'s state dict loaded strictly, ``model.config`` set."""
    model = entry.build_model()
    if getattr(getattr(model, "config", None), "layout", "") == "reference":
        return _load_released(entry, model, source)
    import torch

    from ..config import ModelConfig
    from ..models.torchvision_fcn import check_fits

    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        raise ModelFormatError(f"{source}: not a readable state dict "
                               f"({str(exc).strip().splitlines()[0]}); fetch it again") from None
    if not isinstance(state, dict):
        raise ModelFormatError(f"{source}: holds a {type(state).__name__}, not the state dict "
                               f"of {entry.architecture}")
    try:
        check_fits(model, state)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{source}: not {entry.name}'s weights: {exc}") from None
    model.load_state_dict(state, strict=True)
    if getattr(model, "config", None) is None:
        model.config = ModelConfig(name=model.arch, num_classes=model.num_classes,
                                   aux=entry.aux)
    return model


def _load_released(entry: PretrainedEntry, model, source: Path):
    """``model`` (the entry's, in the reference layout) with ``source`` loaded: a released Caffe
    net of the same variant, converted to a bare state dict, every tensor matching once its
    C×C×k×k upsampling kernels are taken as depthwise ones (``apply_weights``)."""
    from ..models.loading import apply_weights
    from ..models.weights import read_weights

    weights = read_weights(source)  # unreadable, or an export: one line from there
    wanted = model.config.name
    if weights.kind != "fcn" or weights.backbone != "vgg16" or weights.variant != wanted:
        found = (f"a {weights.backbone} {weights.variant}" if weights.kind == "fcn"
                 else f"{weights.kind} weights ({weights.variant or weights.backbone})")
        raise ModelFormatError(f"{source}: not {entry.name}'s weights: it holds {found}, "
                               f"expected the released VGG16 {wanted} state dict")
    try:
        model.load_report = apply_weights(model, weights)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{source}: not {entry.name}'s weights: {exc}") from None
    return model


def prepare_archive(entry: PretrainedEntry, source: Path, digest: str,
                    cache: str | Path | None, log: Log) -> Path:
    """``<cache>/<source>/<folder>/<model>.fcn-edge.onnx``: ``source`` (an archive, already
    verified, or a folder already unpacked) with its ONNX graph imported with its labels.
    Reused while it records the SHA-256 of the graph it would be made from."""
    spec, target = entry.archive, entry.prepared_path(cache)
    check_writable(target.parent.parent, _cache_flag(cache), folder=True)
    folder = source if source.is_dir() else _unpack(entry, source, digest, cache, log)
    onnx_file = folder / spec.model
    if not onnx_file.is_file():
        raise ModelFormatError(f"{folder}: has no {spec.model}; give jetson-inference's "
                               f"{spec.folder} folder or its archive {spec.file}")
    if _current_onnx(target, file_sha256(onnx_file)):
        return target
    classes_file = _classes_file(entry, folder, target.parent, log)
    from ..data.files import read_classes_file
    from .import_onnx import ImportOptions, import_onnx

    classes = read_classes_file(classes_file)
    palette = _archive_palette(entry, folder / spec.colors, len(classes), log)
    extra = {"zoo": entry.name, **({"archive_sha256": digest} if digest else {})}
    options = ImportOptions(classes=str(classes_file), mean=entry.mean, std=entry.std,
                            color=entry.color_order, palette=_rows(palette),
                            provenance=tuple(extra.items()))
    import_onnx(onnx_file, options, target, log=log)  # staged and checked before it lands
    log(f"{entry.name}: ready to deploy, {target}")
    return target


def _unpack(entry: PretrainedEntry, source: Path, digest: str, cache: str | Path | None,
            log: Log) -> Path:
    """The archive unpacked into the cache; a damaged download is removed, not kept."""
    try:
        return unpack(source, entry.prepared_path(cache).parent.parent, entry.archive, digest,
                      log)
    except ModelFormatError:
        if source == entry.cached_path(cache):  # our download, not the user's file: a
            source.unlink(missing_ok=True)      # damaged copy must not stay to be reused
        raise


def _current_onnx(target: Path, model_sha256: str) -> bool:
    """Whether ``target`` was imported from the graph whose SHA-256 is ``model_sha256``."""
    from ..runtime.onnx_file import read_onnx_metadata

    if not target.is_file():
        return False
    try:
        return read_onnx_metadata(target).source_sha256 == model_sha256
    except (FcnEdgeError, OSError):  # unreadable or not ours: imported again
        return False


def _classes_file(entry: PretrainedEntry, folder: Path, cache_folder: Path, log: Log) -> Path:
    """The archive's class list; where it has none, the entry's, written into the cache."""
    given = folder / entry.archive.labels
    if given.is_file():
        return given
    written = cache_folder / ".fcn-edge-classes.txt"
    log(f"{folder.name} has no {entry.archive.labels}; using the zoo's {len(entry.classes)} "
        f"classes for {entry.name}")
    with atomic_path(written) as tmp:
        tmp.write_text("\n".join(entry.classes) + "\n", encoding="utf-8")
    return written


def _archive_palette(entry: PretrainedEntry, colors: Path, count: int, log: Log):
    """``count`` colours: the archive's ``colors.txt``, filled (or replaced, when absent) by
    the entry's palette and then segNet's default colours."""
    import numpy as np

    registered = np.asarray(resolve(entry.palette)(min(count, len(entry.classes))), np.uint8)
    fallback = np.concatenate([registered.reshape(-1, 3),
                               jetson_palette(count)[len(registered):]])
    if not colors.is_file():
        return fallback
    return read_colors(colors, count, fallback, log)


def _rows(colors) -> tuple[tuple[int, int, int], ...]:
    return tuple(tuple(int(v) for v in row) for row in colors)


def _cache_flag(cache: str | Path | None) -> str:
    return "--cache" if cache is not None else CACHE_ENV


__all__ = ["prepare_archive", "prepare_checkpoint"]
