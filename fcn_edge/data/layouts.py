"""One entry point for every data set: ``open_dataset("synthetic")`` or ``open_dataset(path)``.

A table maps each layout to how it is recognised and which class reads it, so adding a layout
is one line here and one module beside this one.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

from ..errors import InputError
from .base import SegmentationDataset
from .cityscapes import CityscapesSegmentation, locate_cityscapes
from .folder import FolderSegmentation, locate_folder
from .nyud import NYUDv2Segmentation, locate_nyud
from .procedural import ProceduralScenes
from .procedural_multi import ProceduralRGBD, ProceduralTwoTask
from .sbd import SBDSegmentation, locate_sbd
from .siftflow import SIFTFlowSegmentation, locate_siftflow
from .voc import VOCSegmentation, locate_voc

__all__ = ["LAYOUTS", "SYNTHETIC", "SYNTHETIC_SPLIT_STRIDE", "detect_layout", "open_dataset"]

SYNTHETIC = "synthetic"
#: Seed offset between the synthetic splits (a prime far above any image count): val and test
#: scenes come from generators no training scene uses.
SYNTHETIC_SPLIT_STRIDE = 10_000_019
SYNTHETIC_SPLITS = ("train", "val", "test")
#: The procedural sets: plain RGB, RGB-D (paper §5's NYUDv2 setting) and two tasks (SIFT Flow's).
#: Image i of each is the same scene for the same seed and split.
SYNTHETIC_READERS: dict[str, type[ProceduralScenes]] = {
    SYNTHETIC: ProceduralScenes, "synthetic-rgbd": ProceduralRGBD,
    "synthetic-twotask": ProceduralTwoTask}


class Layout(NamedTuple):
    """How a directory layout is recognised, what it needs (for errors), who reads it."""
    locate: Callable[[Path], Any]
    needs: str
    reader: type[SegmentationDataset]


# Checked in this order: VOC before SBD, so a VOC root that also holds SegmentationClassAug
# opens as VOC (the paper evaluates on VOC masks); pass layout="sbd" for the Aug masks.
LAYOUTS: dict[str, Layout] = {
    "cityscapes": Layout(locate_cityscapes, "leftImg8bit/<split>/<city>/*_leftImg8bit.png and "
                         "gtFine/<split>/<city>/*_gtFine_labelIds.png", CityscapesSegmentation),
    "voc": Layout(locate_voc, "JPEGImages/*.jpg, SegmentationClass/*.png and "
                  "ImageSets/Segmentation/<split>.txt (also under VOCdevkit/VOC2012/)",
                  VOCSegmentation),
    "sbd": Layout(locate_sbd, "cls/*.mat, img/*.jpg and <split>.txt (benchmark_RELEASE/dataset/)"
                  ", or SegmentationClassAug/*.png beside JPEGImages/", SBDSegmentation),
    "nyud": Layout(locate_nyud, "data/images/img_<id>.png, segmentation/img_<id>.mat (key "
                   "'segmentation', 0 = void, 1..40), <split>.txt; optional data/depth/ "
                   "(uint16 mm) and data/hha/ (also under nyud/)", NYUDv2Segmentation),
    "siftflow": Layout(locate_siftflow, "Images/, SemanticLabels/ and GeoLabels/ each with "
                       "spatial_envelope_256x256_static_8outdoorcategories/<id>.jpg|.mat, and "
                       "<split>.txt (trainval, test)", SIFTFlowSegmentation),
    "folder": Layout(locate_folder, "images/ and masks/ with matching file names (optionally "
                     "images/<split>/ and masks/<split>/), optional classes.txt",
                     FolderSegmentation),
}


def detect_layout(path: str | os.PathLike) -> str:
    """The layout of the data set at ``path``: "cityscapes", "voc", "sbd", "nyud", "siftflow"
    or "folder" (a procedural set's name, e.g. "synthetic", when no such path exists)."""
    path = Path(path).expanduser()
    if not path.exists():
        if str(path) in SYNTHETIC_READERS:
            return str(path)
        raise InputError(f"{path}: no such data set directory (give a directory or "
                         f"'{SYNTHETIC}' for the built-in procedural scenes)")
    if not path.is_dir():
        raise InputError(f"{path}: a data set is a directory, not a file")
    for name, layout in LAYOUTS.items():
        if layout.locate(path) is not None:
            return name
    needs = "\n".join(f"  {name:<11} {layout.needs}" for name, layout in LAYOUTS.items())
    raise InputError(f"{path}: unknown data set layout; expected one of:\n{needs}\n"
                     f"or '{SYNTHETIC}' for the built-in procedural scenes")


def _check_options(reader: Callable[..., Any], layout: str, options: dict[str, Any]) -> None:
    """Unknown options are a clear error, not a TypeError from deep inside a constructor."""
    accepted = [p for p in inspect.signature(reader).parameters if p not in ("root", "split")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(f"layout '{layout}' has no option {', '.join(unknown)} (options: "
                         f"{', '.join(accepted) or 'none'})")


def _open_synthetic(split: str, options: dict[str, Any],
                    name: str = SYNTHETIC) -> ProceduralScenes:
    reader = SYNTHETIC_READERS[name]
    _check_options(reader, name, options)
    if split not in SYNTHETIC_SPLITS:
        raise InputError(f"{name} data has splits {', '.join(SYNTHETIC_SPLITS)}, "
                         f"not {split!r}")
    seed = int(options.pop("seed", 0)) + SYNTHETIC_SPLITS.index(split) * SYNTHETIC_SPLIT_STRIDE
    scenes = reader(seed=seed, **options)
    scenes.split = split
    return scenes


def open_dataset(spec: str | os.PathLike, split: str = "train", layout: str | None = None,
                 **options: Any) -> SegmentationDataset:
    """The ``split`` of a data set: ``spec`` is "synthetic", "synthetic-rgbd" or
    "synthetic-twotask" (options num_images, size, seed, difficulty; val and test use seeds
    disjoint from train's) or a directory, read as ``layout`` or as ``detect_layout`` finds.
    Layout options: cityscapes ``annotations``, folder ``classes``, nyud ``modality``."""
    if layout is None:
        layout = detect_layout(spec)
    if layout in SYNTHETIC_READERS:
        return _open_synthetic(str(split), dict(options), layout)
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; known: {', '.join(SYNTHETIC_READERS)}, "
                         f"{', '.join(LAYOUTS)}")
    reader = LAYOUTS[layout].reader
    _check_options(reader, layout, options)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise InputError(f"{path}: no such data set directory")
    return reader(path, split, **options)
