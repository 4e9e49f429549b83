"""Cityscapes (Cordts et al. 2016), the urban-scene benchmark of FCN's journal version.

Layout: ``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and
``gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png``. Masks hold the 34 raw
labelIds; they are mapped to the 19 evaluated trainIds with the official table
(cityscapesScripts ``labels.py``), every other id (void, parking, caravan, ...) to 255.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from .base import FileDataset, Item, list_stems, missing_error
from .classes import (CITYSCAPES_CLASSES, CITYSCAPES_MAX_LABEL_ID, CITYSCAPES_PALETTE,
                      cityscapes_label_map)
from .files import read_mask

__all__ = ["CityscapesSegmentation", "locate_cityscapes"]

IMAGE_SUFFIX = "_leftImg8bit"
ANNOTATIONS = ("gtFine", "gtCoarse")


def locate_cityscapes(path: str | os.PathLike) -> Path | None:
    """``path`` when it holds leftImg8bit/ and gtFine/ (or gtCoarse/), else None."""
    path = Path(path)
    if (path / "leftImg8bit").is_dir() and any((path / a).is_dir() for a in ANNOTATIONS):
        return path
    return None


def _subdirs(directory: Path) -> list[Path]:
    return sorted(d for d in directory.iterdir() if d.is_dir()) if directory.is_dir() else []


def _items(root: Path, split: str, annotations: str) -> list[Item]:
    """Every image of the split with its labelIds mask, city by city in name order."""
    images_dir = root / "leftImg8bit" / split
    if not images_dir.is_dir():
        found = ", ".join(d.name for d in _subdirs(root / "leftImg8bit")) or "none"
        raise InputError(f"{images_dir}: no such Cityscapes split (splits found: {found})")
    items: list[Item] = []
    missing: list[Path] = []
    for city in _subdirs(images_dir):
        masks_dir = root / annotations / split / city.name
        masks = list_stems(masks_dir, (".png",))
        for stem, image in list_stems(city, (".png",)).items():
            if not stem.endswith(IMAGE_SUFFIX):
                continue
            name = stem[:-len(IMAGE_SUFFIX)]
            mask_stem = f"{name}_{annotations}_labelIds"
            if mask_stem not in masks:
                missing.append(masks_dir / f"{mask_stem}.png")
            items.append(Item(name, image, masks_dir / f"{mask_stem}.png"))
    if missing:
        raise missing_error(missing, f"the images of {images_dir}")
    if not items:
        raise InputError(f"{images_dir}: no <city>/*{IMAGE_SUFFIX}.png images")
    return items


class CityscapesSegmentation(FileDataset):
    """Cityscapes with 19 trainId classes; ``annotations`` is "gtFine" or "gtCoarse"."""

    layout = "cityscapes"

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 annotations: str = "gtFine") -> None:
        if annotations not in ANNOTATIONS:
            raise InputError(f"annotations must be one of {', '.join(ANNOTATIONS)}, "
                             f"got {annotations!r}")
        root = Path(root)
        if locate_cityscapes(root) is None:
            raise InputError(f"{root}: not a Cityscapes directory: needs leftImg8bit/ and "
                             f"{annotations}/")
        super().__init__(_items(root, str(split), annotations), CITYSCAPES_CLASSES,
                         CITYSCAPES_PALETTE, root, str(split), label_map=cityscapes_label_map())

    def read_mask(self, path: Path) -> np.ndarray:
        """Raw labelIds; anything above 33 means another kind of file (trainIds, colour)."""
        raw = read_mask(path)
        if raw.size and int(raw.max()) > CITYSCAPES_MAX_LABEL_ID:
            raise InputError(f"{path}: label value {int(raw.max())} is not a Cityscapes labelId "
                             f"(0..{CITYSCAPES_MAX_LABEL_ID}); expected the *_labelIds.png "
                             "masks, not labelTrainIds or colour")
        return raw
