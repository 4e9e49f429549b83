"""PASCAL VOC 2011/2012 segmentation (§5 "PASCAL VOC"), and writing any data set in VOC layout.

Layout: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNGs whose indices are
the 21 class ids, 255 on object borders: ignored) and ``ImageSets/Segmentation/<split>.txt``,
either at the root or under ``VOCdevkit/VOC2012/`` (or VOC2011) as the tarballs unpack.
A split may also be a path to any id list, e.g. the paper's ``seg11valid.txt`` (the 736
VOC 2011 val images not in SBD's training set, §5 footnote).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..errors import InputError
from ..io import atomic_path
from .base import FileDataset, Item, SegmentationDataset, list_stems, missing_error, split_ids
from .classes import VOC_CLASSES, voc_palette
from .files import full_palette, read_classes_file, write_image, write_palette_png

__all__ = ["VOCSegmentation", "write_voc", "locate_voc", "voc_items", "CLASSES_FILE"]

#: Not part of VOC: ``write_voc`` records the class names of a data set whose classes are not
#: VOC's here, so that reading it back gives the same classes.
CLASSES_FILE = "classes.txt"
JPEG_SUFFIXES = (".jpg", ".jpeg")


def voc_candidates(path: str | os.PathLike) -> list[Path]:
    """``path`` and the VOCdevkit nestings below it, newest year first."""
    path = Path(path)
    nested = sorted(path.glob("VOCdevkit/VOC20*"), reverse=True)
    return [path, *nested, *sorted(path.glob("VOC20*"), reverse=True)]


def locate_voc(path: str | os.PathLike, mask_dir: str = "SegmentationClass") -> Path | None:
    """The directory holding ``JPEGImages/`` and ``mask_dir/``, or None."""
    for root in voc_candidates(path):
        if (root / "JPEGImages").is_dir() and (root / mask_dir).is_dir():
            return root
    return None


def voc_items(root: Path, split: str | os.PathLike, mask_dir: str,
              split_dirs: Sequence[Path]) -> tuple[Path, list[Item]]:
    """(split file, items) for the ids of ``split``, every one checked to have both files."""
    split_file, ids = split_ids(split, split_dirs)
    images = list_stems(root / "JPEGImages", JPEG_SUFFIXES)
    masks = list_stems(root / mask_dir, (".png",))
    for directory, found, suffix in ((root / "JPEGImages", images, ".jpg"),
                                     (root / mask_dir, masks, ".png")):
        missing = [directory / f"{name}{suffix}" for name in ids if name not in found]
        if missing:
            raise missing_error(missing, str(split_file))
    return split_file, [Item(name, images[name], masks[name]) for name in ids]


def voc_classes(root: Path) -> tuple[str, ...]:
    """VOC's 21 classes, unless a ``classes.txt`` written by ``write_voc`` says otherwise."""
    path = root / CLASSES_FILE
    return read_classes_file(path) if path.is_file() else VOC_CLASSES


class VOCSegmentation(FileDataset):
    """PASCAL VOC segmentation: ``split`` is a name in ImageSets/Segmentation (train, val,
    trainval) or a path to an id list."""

    layout = "voc"

    def __init__(self, root: str | os.PathLike, split: str | os.PathLike = "train") -> None:
        located = locate_voc(root)
        if located is None:
            raise InputError(f"{root}: not a PASCAL VOC directory: needs JPEGImages/ and "
                             "SegmentationClass/ (directly or under VOCdevkit/VOC2012/)")
        split_file, items = voc_items(located, split, "SegmentationClass",
                                      [located / "ImageSets" / "Segmentation"])
        super().__init__(items, voc_classes(located), voc_palette(256), located,
                         split_file.stem)
        self.split_file = split_file


def _write_classes(root: Path, classes: tuple[str, ...]) -> None:
    """Record non-VOC classes; refuse to mix data sets of different classes in one root."""
    path = root / CLASSES_FILE
    existing = read_classes_file(path) if path.is_file() else VOC_CLASSES
    if (root / "ImageSets").is_dir() and existing != classes:
        raise InputError(f"{root}: already holds a data set with classes {list(existing)}; "
                         f"cannot add one with classes {list(classes)}: use another directory")
    if classes != VOC_CLASSES:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{name}\n" for name in classes), encoding="utf-8")


def _check_name(name: str) -> str:
    if not name or name in (".", "..") or any(c in name for c in "/\\\n\r\t "):
        raise InputError(f"write_voc: sample name {name!r} cannot be a VOC id (no empty "
                         "names, path separators or whitespace)")
    return name


def write_voc(dataset: SegmentationDataset, root: str | os.PathLike,
              split: str = "train") -> Path:
    """Write ``dataset`` in PASCAL VOC layout under ``root`` and return ``root``.

    Images go to ``JPEGImages/<name>.jpg`` (quality 95, full-resolution colour), masks to
    ``SegmentationClass/<name>.png`` as palette PNGs with the data set's palette (exact), and
    the ids to ``ImageSets/Segmentation/<split>.txt``. The split file is written last and
    atomically, so an interrupted export never looks like a complete split.
    """
    root = Path(root)
    _write_classes(root, tuple(dataset.classes))
    palette = full_palette(dataset.palette)
    names: list[str] = []
    for sample in dataset:
        name = _check_name(sample.name)
        write_image(root / "JPEGImages" / f"{name}.jpg", sample.image, quality=95)
        write_palette_png(root / "SegmentationClass" / f"{name}.png", sample.mask, palette)
        names.append(name)
    if not names:
        raise InputError(f"write_voc: the data set to write to {root} is empty")
    with atomic_path(root / "ImageSets" / "Segmentation" / f"{split}.txt") as tmp:
        tmp.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    return root
