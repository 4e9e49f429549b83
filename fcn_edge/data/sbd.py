"""SBD, the Semantic Boundaries Dataset (Hariharan et al. 2011): extra VOC-class masks for
11,355 images; FCN trains on its 8,498-image train split and validates on VOC 2011's
seg11valid (§5 "PASCAL VOC", footnote).

Two flavours, same 21 VOC classes:

* the release: ``benchmark_RELEASE/dataset/`` with ``cls/<id>.mat`` (a MATLAB struct
  ``GTcls`` whose field ``Segmentation`` is the H×W label map), ``img/<id>.jpg`` and
  ``train.txt`` / ``val.txt``; the .mat files need scipy (imported only when one is read);
* "SegmentationClassAug": the common VOC+SBD conversion, PNG masks in
  ``SegmentationClassAug/`` beside VOC's ``JPEGImages/``, with a split file in
  ``ImageSets/SegmentationAug/``, ``ImageSets/Segmentation/`` or the root (e.g. train_aug.txt).
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable, InputError
from .base import FileDataset, Item, list_stems, missing_error, split_ids
from .classes import VOC_CLASSES, voc_palette
from .files import read_file_bytes, read_mask
from .voc import JPEG_SUFFIXES, locate_voc, voc_items

__all__ = ["SBDSegmentation", "locate_sbd", "read_sbd_mat"]

AUG_MASKS = "SegmentationClassAug"


def locate_sbd(path: str | os.PathLike) -> tuple[Path, str] | None:
    """(root, flavour) with flavour "mat" (the release) or "aug" (SegmentationClassAug)."""
    path = Path(path)
    for root in (path, path / "dataset", path / "benchmark_RELEASE" / "dataset"):
        if (root / "cls").is_dir() and (root / "img").is_dir():
            return root, "mat"
    aug = locate_voc(path, AUG_MASKS)
    return (aug, "aug") if aug is not None else None


def read_sbd_mat(path: str | os.PathLike) -> np.ndarray:
    """The H×W uint8 label map ``GTcls.Segmentation`` of an SBD ``cls/*.mat`` file."""
    data = read_file_bytes(path, "mask")
    try:
        from scipy.io import loadmat  # lazy: only SBD's .mat files need scipy
    except ImportError:
        raise BackendUnavailable("reading SBD .mat masks needs scipy: pip install scipy (or "
                                 "the 'train' extra), or use the SegmentationClassAug PNGs"
                                 ) from None
    try:
        contents = loadmat(io.BytesIO(data), struct_as_record=False, squeeze_me=True)
    except Exception as exc:  # scipy raises ValueError, TypeError, NotImplementedError (v7.3)
        raise InputError(f"{path}: unreadable MATLAB file ({exc})") from None
    segmentation = getattr(contents.get("GTcls"), "Segmentation", None)
    if segmentation is None:
        found = ", ".join(k for k in contents if not k.startswith("__")) or "none"
        raise InputError(f"{path}: no struct GTcls with field Segmentation (variables: {found})")
    labels = np.asarray(segmentation)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer) or (
            labels.size and (labels.min() < 0 or labels.max() > 255)):
        raise InputError(f"{path}: GTcls.Segmentation must be an H×W integer label map in "
                         f"0..255, got {labels.dtype} of shape {labels.shape}")
    return labels.astype(np.uint8)


def _mat_items(root: Path, split: str | os.PathLike) -> tuple[Path, list[Item]]:
    split_file, ids = split_ids(split, [root])
    images = list_stems(root / "img", JPEG_SUFFIXES)
    mats = list_stems(root / "cls", (".mat",))
    for directory, found, suffix in ((root / "img", images, ".jpg"), (root / "cls", mats, ".mat")):
        missing = [directory / f"{name}{suffix}" for name in ids if name not in found]
        if missing:
            raise missing_error(missing, str(split_file))
    return split_file, [Item(name, images[name], mats[name]) for name in ids]


class SBDSegmentation(FileDataset):
    """SBD in either flavour; ``split`` is a name (train, val, train_aug, ...) or a path."""

    layout = "sbd"

    def __init__(self, root: str | os.PathLike, split: str | os.PathLike = "train") -> None:
        located = locate_sbd(root)
        if located is None:
            raise InputError(f"{root}: not an SBD directory: needs cls/ and img/ (the release's "
                             f"dataset/), or {AUG_MASKS}/ beside JPEGImages/")
        base, self.flavour = located
        if self.flavour == "mat":
            split_file, items = _mat_items(base, split)
        else:
            split_dirs = [base / "ImageSets" / "SegmentationAug",
                          base / "ImageSets" / "Segmentation", base]
            split_file, items = voc_items(base, split, AUG_MASKS, split_dirs)
        super().__init__(items, VOC_CLASSES, voc_palette(256), base, split_file.stem)
        self.split_file = split_file

    def read_mask(self, path: Path) -> np.ndarray:
        return read_sbd_mat(path) if path.suffix.lower() == ".mat" else read_mask(path)
