"""Class names, colour maps and label tables of the data sets FCN was evaluated on (§5).

Pure data and numpy. The VOC colour map is the runtime's (``runtime/palette.py``: an edge box
colours its output and writes its masks with it without the data package) and is re-exported here.
"""
from __future__ import annotations

import numpy as np

from ..runtime.palette import voc_palette

__all__ = ["IGNORE_INDEX", "VOC_CLASSES", "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE",
           "CITYSCAPES_TRAIN_IDS", "cityscapes_label_map", "voc_palette"]

#: Label of pixels that never count (VOC's object borders, Cityscapes' void classes, padding).
IGNORE_INDEX = 255

#: PASCAL VOC 2011/2012 segmentation classes, in label order (§5 "PASCAL VOC").
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor")

#: The 19 Cityscapes evaluation classes, in trainId order (cityscapesScripts ``labels.py``).
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle")

#: The official colours of the 19 classes (RGB), as in cityscapesScripts ``labels.py``.
CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32)], np.uint8)
CITYSCAPES_PALETTE.setflags(write=False)

#: labelId of each trainId 0..18; every other labelId (void, parking, caravan, ...) is ignored.
CITYSCAPES_TRAIN_IDS: tuple[int, ...] = (
    7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
#: Largest labelId in the official table; larger values mean a wrong file (e.g. trainIds).
CITYSCAPES_MAX_LABEL_ID = 33


def cityscapes_label_map() -> np.ndarray:
    """256-entry lookup table labelId → trainId (255 for everything not evaluated)."""
    table = np.full(256, IGNORE_INDEX, np.uint8)
    table[list(CITYSCAPES_TRAIN_IDS)] = np.arange(len(CITYSCAPES_TRAIN_IDS), dtype=np.uint8)
    return table
