"""Data sets and transforms: procedural scenes, PASCAL VOC, SBD, Cityscapes, image–mask folders.

Every data set is a sequence of ``Sample(image, mask, name)`` (H×W×3 uint8 RGB, H×W uint8 class
ids with 255 ignored) with ``classes``, ``palette``, ``ignore_index``, ``num_classes`` and
``layout``. numpy and OpenCV only (scipy, lazily, for SBD's .mat files): evaluation and the
runtime use this package on edge boxes without torch.

    from fcn_edge.data import open_dataset, TrainAugment, normalize
    train = open_dataset("synthetic", "train", num_images=1000)
    val = open_dataset("/data/VOCdevkit", "seg11valid.txt")   # layout detected: voc
"""
from __future__ import annotations

from .base import FileDataset, Item, Sample, SegmentationDataset
from .cityscapes import CityscapesSegmentation
from .classes import (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, CITYSCAPES_TRAIN_IDS,
                      IGNORE_INDEX, VOC_CLASSES, cityscapes_label_map, voc_palette)
from .files import (read_classes_file, read_image, read_mask, read_palette_png,
                    read_split_file, write_image, write_palette_png)
from .folder import FolderSegmentation
from .layouts import LAYOUTS, SYNTHETIC_READERS, detect_layout, open_dataset
from .nyud import NYUD_CLASSES, NYUDv2Segmentation, hha_from_depth
from .procedural import PROCEDURAL_CLASSES, ProceduralScenes, render_scene
from .procedural_multi import (GEOMETRIC_CLASSES, ProceduralRGBD, ProceduralTwoTask,
                               depth_for_scene, depth_from_png, depth_to_png, geometric_labels)
from .sbd import SBDSegmentation, read_sbd_mat
from .siftflow import SIFTFLOW_CLASSES, SIFTFLOW_GEOMETRIC_CLASSES, SIFTFlowSegmentation
from .transforms import IMAGENET_MEAN, IMAGENET_STD, TrainAugment, normalize, pad_to
from .voc import VOCSegmentation, write_voc

__all__ = [
    # samples and data sets
    "Sample", "SegmentationDataset", "FileDataset", "Item", "ProceduralScenes",
    "VOCSegmentation", "SBDSegmentation", "CityscapesSegmentation", "FolderSegmentation",
    "NYUDv2Segmentation", "SIFTFlowSegmentation", "ProceduralRGBD", "ProceduralTwoTask",
    "SYNTHETIC_READERS", "NYUD_CLASSES", "SIFTFLOW_CLASSES", "SIFTFLOW_GEOMETRIC_CLASSES",
    "GEOMETRIC_CLASSES", "hha_from_depth", "depth_for_scene", "depth_to_png", "depth_from_png",
    "geometric_labels",
    "open_dataset", "detect_layout", "LAYOUTS", "write_voc", "render_scene",
    # classes and colours
    "PROCEDURAL_CLASSES", "VOC_CLASSES", "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE",
    "CITYSCAPES_TRAIN_IDS", "IGNORE_INDEX", "cityscapes_label_map", "voc_palette",
    # files
    "read_image", "read_mask", "read_palette_png", "read_sbd_mat", "read_split_file",
    "read_classes_file", "write_image", "write_palette_png",
    # transforms
    "TrainAugment", "normalize", "pad_to", "IMAGENET_MEAN", "IMAGENET_STD",
]
