"""What every data set is: a sequence of ``Sample``s with classes, a palette and an ignore label.

File-backed layouts (VOC, SBD, Cityscapes, folders) only decide *which* files make up a split;
``FileDataset`` reads and checks them, so every layout refuses bad data the same way.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from ..errors import InputError
from .classes import IGNORE_INDEX
from .files import check_mask, read_image, read_mask, read_split_file

__all__ = ["Sample", "Item", "SegmentationDataset", "FileDataset", "list_stems",
           "resolve_split_file", "split_ids", "missing_error"]

_MAX_SHOWN = 5


class Sample(NamedTuple):
    """One training or evaluation example.

    Multi-modal and multi-task data sets (paper §5: NYUDv2 RGB-D, SIFT Flow) also fill
    ``inputs`` (extra modalities by name, each H×W or H×W×C at the image's size: ``depth`` as
    float32 metres, ``hha`` as H×W×3 uint8) and ``masks`` (every task's H×W uint8 labels by task
    name, the primary task — the one in ``mask`` — included). Single-task RGB sets leave both
    None, so code that reads only image, mask and name works on every data set.
    """
    image: np.ndarray  # H×W×3 uint8, RGB
    mask: np.ndarray   # H×W uint8 class ids, 255 = ignore
    name: str          # unique within the data set; a file stem (no directories)
    inputs: dict[str, np.ndarray] | None = None
    masks: dict[str, np.ndarray] | None = None


class Item(NamedTuple):
    """Where one sample of a file-backed data set lives."""
    name: str
    image: Path
    mask: Path


class SegmentationDataset:
    """Base of every data set: a sequence of ``Sample``s plus what is needed to train on it
    and show its labels (class names, colours, the ignored label)."""

    layout: str = ""
    classes: tuple[str, ...] = ()
    palette: np.ndarray
    ignore_index: int = IGNORE_INDEX
    split: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    def _index(self, index: int) -> int:
        """``index`` as a position in 0..len-1 (negative counts from the end)."""
        n = len(self)
        position = index + n if index < 0 else index
        if not 0 <= position < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        return position


class FileDataset(SegmentationDataset):
    """Samples read from (image, mask) file pairs; masks are checked against their image."""

    def __init__(self, items: Sequence[Item], classes: Sequence[str], palette: np.ndarray,
                 root: Path, split: str, label_map: np.ndarray | None = None) -> None:
        self.items = tuple(items)
        self.classes = tuple(classes)
        self.palette = np.asarray(palette, np.uint8)
        self.root, self.split = Path(root), split
        self.label_map = label_map  # 256-entry table raw value → class id, or None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(item.name for item in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def read_mask(self, path: Path) -> np.ndarray:
        """The raw label map of one file (layouts with other formats override this)."""
        return read_mask(path)

    def __getitem__(self, index: int) -> Sample:
        item = self.items[self._index(index)]
        image = read_image(item.image)
        mask = self.read_mask(item.mask)
        if self.label_map is not None:
            mask = self.label_map[mask]
        check_mask(mask, image.shape, self.num_classes, item.mask, item.image, self.ignore_index)
        return Sample(image, mask, item.name)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root='{self.root}', split='{self.split}', "
                f"{len(self)} images, {self.num_classes} classes)")


def list_stems(directory: Path, suffixes: Iterable[str]) -> dict[str, Path]:
    """stem → path of the files in ``directory`` whose suffix (any case) is in ``suffixes``.
    One directory listing instead of a stat per id: VOC+SBD splits hold ~10k ids."""
    wanted = {s.lower() for s in suffixes}
    found: dict[str, Path] = {}
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return found
    for entry in sorted(entries, key=lambda e: e.name):
        stem, suffix = os.path.splitext(entry.name)
        # Hidden files ("._x.jpg" from macOS copies) are metadata, not samples.
        if suffix.lower() in wanted and not stem.startswith(".") and entry.is_file():
            if stem in found:
                raise InputError(f"{directory}: two files for '{stem}' ({found[stem].name} and "
                                 f"{entry.name}); keep one")
            found[stem] = Path(entry.path)
    return found


def missing_error(missing: Sequence[Path], source: str) -> InputError:
    """An error naming the first missing file, and how many more are missing."""
    extra = ""
    if len(missing) > 1:
        shown = ", ".join(p.name for p in missing[1:1 + _MAX_SHOWN])
        shown += " ..." if len(missing) > 1 + _MAX_SHOWN else ""
        extra = f" (and {len(missing) - 1} more: {shown})"
    return InputError(f"{missing[0]}: file is missing{extra}; listed in {source}")


def resolve_split_file(split: str | os.PathLike, candidates: Sequence[Path]) -> Path:
    """The split file for ``split``: a path to an id list (e.g. the paper's seg11valid.txt)
    or a name looked up as ``<dir>/<split>.txt`` in each candidate directory in turn."""
    as_path = Path(split)
    bare = as_path.parent == Path(".")
    if as_path.suffix == ".txt" or not bare:
        if as_path.is_file():
            return as_path
        if not bare:  # a path, not a name: nothing to look up
            raise InputError(f"{as_path}: split file is missing")
    name = as_path.stem if as_path.suffix == ".txt" else str(split)  # "val.txt" means "val"
    for directory in candidates:
        if (directory / f"{name}.txt").is_file():
            return directory / f"{name}.txt"
    known = sorted({p.stem for d in candidates if d.is_dir() for p in d.glob("*.txt")})
    raise InputError(f"no split '{name}': looked for {name}.txt in "
                     f"{', '.join(str(d) for d in candidates)}; splits found: "
                     f"{', '.join(known) or 'none'}")


def split_ids(split: str | os.PathLike, candidates: Sequence[Path]) -> tuple[Path, list[str]]:
    """(split file, its ids) for a split name or path."""
    path = resolve_split_file(split, candidates)
    return path, read_split_file(path)
