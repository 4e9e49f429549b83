"""SIFT Flow (Liu et al. 2011, labelled by Tighe & Lazebnik 2010): 2,688 outdoor images of
256×256 with two labelings, 33 semantic classes and 3 geometric classes; the paper (§5
"SIFT Flow") trains one FCN-16s with a head per labeling.

The layout is the one the FCN reference implementation reads, ``siftflow_layers.py`` of
github.com/shelhamer/fcn.berkeleyvision.org (``SIFTFlowSegDataLayer``, with
``data/sift-flow/classes.txt`` and ``README.md`` there)::

    <root>/Images/spatial_envelope_256x256_static_8outdoorcategories/<id>.jpg
    <root>/SemanticLabels/spatial_envelope_256x256_static_8outdoorcategories/<id>.mat
    <root>/GeoLabels/spatial_envelope_256x256_static_8outdoorcategories/<id>.mat
    <root>/<split>.txt        one id per line, e.g. "coast_arnat59"

Each .mat holds the H×W label map as variable ``S`` (the reference reads
``scipy.io.loadmat(path)['S']``). The split files are not in the data set's zip: the
reference ships them as ``data/sift-flow/trainval.txt`` (2,486 ids) and ``test.txt``
(200 ids) and expects them beside the three folders; the splits leave out the two images
without annotations (highway_bost181, street_urb506).

Labels, mapped as the reference does (``label.astype(np.uint8) - 1``, so 0 wraps to 255):

* semantic: 0 is unlabeled (void) → 255; 1..33 → class 0..32 in ``SIFTFLOW_CLASSES`` order;
* geometric: -1 is void; the reference first sets -1 to 0, so both -1 and 0 → 255;
  1..3 (sky, horizontal, vertical) → 0..2.

Cow, desert and moon never occur in the test split; the reference excludes them when scoring
(``SIFTFLOW_ABSENT_FROM_TEST``). The .mat files need scipy, imported only when one is read.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable, InputError
from .base import FileDataset, Item, Sample, list_stems, missing_error, split_ids
from .classes import IGNORE_INDEX, voc_palette
from .files import check_mask, read_file_bytes, read_image

__all__ = ["SIFTFLOW_CLASSES", "SIFTFLOW_GEOMETRIC_CLASSES", "SIFTFLOW_ABSENT_FROM_TEST",
           "SIFTFLOW_PALETTE", "SIFTFLOW_GEOMETRIC_PALETTE", "SIFTFLOW_SUBDIR",
           "SIFTFlowSegmentation", "locate_siftflow", "read_siftflow_labels"]

#: The 33 semantic classes in label order (reference ``data/sift-flow/classes.txt``, 1..33).
SIFTFLOW_CLASSES: tuple[str, ...] = (
    "awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow",
    "crosswalk", "desert", "door", "fence", "field", "grass", "moon", "mountain", "person",
    "plant", "pole", "river", "road", "rock", "sand", "sea", "sidewalk", "sign", "sky",
    "staircase", "streetlight", "sun", "tree", "window")

#: The 3 geometric classes in label order (reference ``classes.txt``: 1 sky, 2 horizontal,
#: 3 vertical).
SIFTFLOW_GEOMETRIC_CLASSES: tuple[str, ...] = ("sky", "horizontal", "vertical")

#: Semantic classes with no pixel in the test split, left out of the reference's scores.
SIFTFLOW_ABSENT_FROM_TEST: tuple[str, ...] = ("cow", "desert", "moon")

SIFTFLOW_PALETTE = voc_palette(256)
SIFTFLOW_PALETTE.setflags(write=False)
SIFTFLOW_GEOMETRIC_PALETTE = SIFTFLOW_PALETTE

#: The one category folder under Images/, SemanticLabels/ and GeoLabels/.
SIFTFLOW_SUBDIR = "spatial_envelope_256x256_static_8outdoorcategories"
_FOLDERS = {"image": "Images", "semantic": "SemanticLabels", "geometric": "GeoLabels"}
# task → (smallest raw value, largest raw value, what the void values are called)
_RAW_RANGES = {"semantic": (0, len(SIFTFLOW_CLASSES), "0 (unlabeled)"),
               "geometric": (-1, len(SIFTFLOW_GEOMETRIC_CLASSES), "-1 or 0 (void)")}


def locate_siftflow(path: str | os.PathLike) -> Path | None:
    """The root holding Images/, SemanticLabels/ and GeoLabels/ (each with the
    spatial_envelope_256x256_static_8outdoorcategories folder): ``path`` or its
    SiftFlowDataset/ folder (the zip's name)."""
    path = Path(path)
    for root in (path, path / "SiftFlowDataset"):
        if all((root / folder / SIFTFLOW_SUBDIR).is_dir() for folder in _FOLDERS.values()):
            return root
    return None


def _label_map(task: str) -> np.ndarray:
    """Raw value (offset by the smallest one) → class id, as the reference's uint8 - 1."""
    low, high, _ = _RAW_RANGES[task]
    table = np.full(high - low + 1, IGNORE_INDEX, np.uint8)
    table[1 - low:] = np.arange(high, dtype=np.uint8)  # raw k ≥ 1 → k - 1; ≤ 0 → void
    return table


_LABEL_MAPS = {task: _label_map(task) for task in _RAW_RANGES}


def read_siftflow_labels(path: str | os.PathLike, task: str) -> np.ndarray:
    """The H×W uint8 class ids of a SIFT Flow label file: variable ``S`` of the .mat, mapped
    as the reference does (semantic 0 → 255, k → k-1; geometric -1 and 0 → 255, k → k-1)."""
    if task not in _RAW_RANGES:
        raise InputError(f"unknown SIFT Flow task {task!r}; tasks: {', '.join(_RAW_RANGES)}")
    data = read_file_bytes(path, f"{task} label")
    try:
        from scipy.io import loadmat  # lazy: only SIFT Flow's .mat labels need scipy
    except ImportError:
        raise BackendUnavailable("reading SIFT Flow .mat labels needs scipy: pip install scipy "
                                 "(or the 'train' extra)") from None
    try:
        contents = loadmat(io.BytesIO(data))
    except Exception as exc:  # scipy raises ValueError, TypeError, NotImplementedError (v7.3)
        raise InputError(f"{path}: unreadable MATLAB file ({exc})") from None
    if "S" not in contents:
        found = ", ".join(k for k in contents if not k.startswith("__")) or "none"
        raise InputError(f"{path}: no variable 'S' holding the {task} labels "
                         f"(variables: {found})")
    raw = np.asarray(contents["S"])
    numeric = np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)
    if raw.ndim != 2 or not numeric or (
            np.issubdtype(raw.dtype, np.floating) and not np.array_equal(raw, np.round(raw))):
        raise InputError(f"{path}: 'S' must be an H×W map of integer labels, got "
                         f"{raw.dtype} of shape {raw.shape}")
    low, high, void = _RAW_RANGES[task]
    bad = raw[(raw < low) | (raw > high)] if raw.size else raw.ravel()
    if bad.size:
        values = np.unique(bad).astype(np.int64)
        shown = ", ".join(str(v) for v in values[:5]) + (" ..." if values.size > 5 else "")
        raise InputError(f"{path}: {task} label values {shown} are outside {low}..{high}; "
                         f"SIFT Flow {task} labels are {void} or 1..{high}")
    return _LABEL_MAPS[task][raw.astype(np.int64) - low]


class SIFTFlowSegmentation(FileDataset):
    """SIFT Flow's ``split`` (a name looked up as ``<root>/<split>.txt``, or a path to an id
    list). Samples carry the semantic labels in ``mask`` and both labelings in ``masks``
    ({"semantic", "geometric"}); ``tasks`` gives each labeling's class names, ``palettes``
    its colours."""

    layout = "siftflow"

    def __init__(self, root: str | os.PathLike, split: str | os.PathLike = "trainval") -> None:
        base = locate_siftflow(root)
        if base is None:
            raise InputError(
                f"{root}: not a SIFT Flow directory: needs Images/, SemanticLabels/ and "
                f"GeoLabels/, each with a {SIFTFLOW_SUBDIR}/ folder (optionally under "
                "SiftFlowDataset/)")
        try:
            split_file, ids = split_ids(split, [base])
        except InputError as exc:
            raise InputError(f"{exc} (SIFT Flow's splits are not in its zip: the FCN reference "
                             "ships trainval.txt and test.txt in data/sift-flow/ of "
                             "shelhamer/fcn.berkeleyvision.org; put them in the root)") from None
        paths = {}
        for kind, folder in _FOLDERS.items():
            directory = base / folder / SIFTFLOW_SUBDIR
            suffix = ".jpg" if kind == "image" else ".mat"
            found = list_stems(directory, (suffix,))
            missing = [directory / f"{name}{suffix}" for name in ids if name not in found]
            if missing:
                raise missing_error(missing, str(split_file))
            paths[kind] = found
        items = [Item(name, paths["image"][name], paths["semantic"][name]) for name in ids]
        super().__init__(items, SIFTFLOW_CLASSES, SIFTFLOW_PALETTE, base, split_file.stem)
        self.split_file = split_file
        self.geometric_paths = {name: paths["geometric"][name] for name in ids}
        self.tasks = {"semantic": SIFTFLOW_CLASSES, "geometric": SIFTFLOW_GEOMETRIC_CLASSES}
        self.palettes = {"semantic": SIFTFLOW_PALETTE, "geometric": SIFTFLOW_GEOMETRIC_PALETTE}

    def __getitem__(self, index: int) -> Sample:
        item = self.items[self._index(index)]
        image = read_image(item.image)
        masks = {"semantic": read_siftflow_labels(item.mask, "semantic"),
                 "geometric": read_siftflow_labels(self.geometric_paths[item.name], "geometric")}
        paths = {"semantic": item.mask, "geometric": self.geometric_paths[item.name]}
        for task, mask in masks.items():
            check_mask(mask, image.shape, len(self.tasks[task]), paths[task], item.image,
                       self.ignore_index)
        return Sample(image, masks["semantic"], item.name, masks=masks)
