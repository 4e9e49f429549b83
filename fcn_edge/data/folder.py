"""A generic image–mask folder: the simplest way to bring your own data.

Layout: ``images/<name>.<jpg|png|...>`` (any of the runtime's ``IMAGE_SUFFIXES``: what
``fcn-edge run`` reads, it trains on) and ``masks/<name>.png`` (class ids: grayscale or
palette PNG, 255 = ignore), optionally split into ``images/<split>/`` and ``masks/<split>/``.
Class names come from the ``classes`` option, else ``classes.txt`` (one name per line), else
they are ``class_0 .. class_<max>`` after scanning every mask once.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..runtime.sources import IMAGE_SUFFIXES
from .base import FileDataset, Item, list_stems, missing_error
from .classes import IGNORE_INDEX, voc_palette
from .files import read_classes_file, read_mask

__all__ = ["FolderSegmentation", "locate_folder", "IMAGE_SUFFIXES", "MASK_SUFFIXES"]

MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")  # lossless only: JPEG would alter labels


def locate_folder(path: str | os.PathLike) -> Path | None:
    path = Path(path)
    return path if (path / "images").is_dir() and (path / "masks").is_dir() else None


def _split_dirs(root: Path, split: str) -> tuple[Path, Path]:
    """images/<split>, masks/<split> if the data is split, else images/, masks/ (all files)."""
    splits = sorted(d.name for d in (root / "images").iterdir() if d.is_dir())
    if not splits:
        return root / "images", root / "masks"
    if split not in splits:
        raise InputError(f"{root / 'images'}: no split '{split}' (splits found: "
                         f"{', '.join(splits)})")
    return root / "images" / split, root / "masks" / split


def _infer_classes(masks_root: Path) -> tuple[str, ...]:
    """class_0 .. class_<max>, max over every mask of every split (so splits agree)."""
    top = 0
    for path in sorted(masks_root.rglob("*")):
        if path.suffix.lower() in MASK_SUFFIXES and path.is_file():
            counts = np.bincount(read_mask(path).ravel(), minlength=256)
            counts[IGNORE_INDEX] = 0
            top = max(top, int(np.flatnonzero(counts).max(initial=0)))
    return tuple(f"class_{i}" for i in range(top + 1))


def _items(images_dir: Path, masks_dir: Path) -> list[Item]:
    images = list_stems(images_dir, IMAGE_SUFFIXES)
    masks = list_stems(masks_dir, MASK_SUFFIXES)
    if not images:
        raise InputError(f"{images_dir}: no images ({' '.join(sorted(IMAGE_SUFFIXES))})")
    no_mask = [masks_dir / f"{name}.png" for name in images if name not in masks]
    if no_mask:
        raise missing_error(no_mask, f"the images of {images_dir} (a mask per image)")
    no_image = [path for name, path in masks.items() if name not in images]
    if no_image:
        raise InputError(f"{no_image[0]}: mask without an image of the same name in "
                         f"{images_dir} ({len(no_image)} such masks)")
    return [Item(name, images[name], masks[name]) for name in images]


class FolderSegmentation(FileDataset):
    """Images and masks paired by file name; see the module docstring for the layout."""

    layout = "folder"

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 classes: Sequence[str] | None = None) -> None:
        root = Path(root)
        if locate_folder(root) is None:
            raise InputError(f"{root}: not an image–mask folder: needs images/ and masks/")
        images_dir, masks_dir = _split_dirs(root, str(split))
        items = _items(images_dir, masks_dir)
        if classes is not None:
            names = tuple(str(c) for c in classes)
        elif (root / "classes.txt").is_file():
            names = read_classes_file(root / "classes.txt")
        else:
            names = _infer_classes(root / "masks")
        if not names:
            raise InputError("classes: give at least one class name")
        super().__init__(items, names, voc_palette(len(names)), root, str(split))
