"""The label sets published segmentation models were trained on, as their sources define them,
and the metadata a foreign training checkpoint implies.

dusty-nv/pytorch-segmentation (jetson-inference's trainer) writes checkpoints that name their
data set (``"dataset": "cityscapes"``) but not its classes: those are fixed by the remapping
scripts it ships, read at dusty-nv/pytorch-segmentation @
16882772bc767511d892d134918722011d1ea771 (``datasets/*_remap.py``, ``train.py``'s
``get_dataset``). :func:`foreign_meta` turns such a checkpoint's entries into the
``CheckpointMeta`` an fcn-edge checkpoint would carry, so its exports and runs name their
classes; :func:`released_meta` does the same for the paper's released Caffe nets. The zoo
(``zoo.py``) reads the same lists. torch-free, like the zoo.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..runtime.metadata import DatasetInfo
from ..runtime.palette import voc_colours
from ..runtime.processing import IMAGENET_MEAN, IMAGENET_STD

#: torchvision's ``_VOC_CATEGORIES`` (``torchvision/models/_meta.py``): background and the 20
#: PASCAL VOC classes, in label order; its segmentation weights' ``meta["categories"]``.
VOC_CATEGORIES = (
    "__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor")

#: ``datasets/cityscapes_remap.py``: Cityscapes' 34 ids folded into 21 classes.
CITYSCAPES_21 = (
    "void", "ego_vehicle", "ground", "road", "sidewalk", "building", "wall", "fence", "pole",
    "traffic_light", "traffic_sign", "vegetation", "terrain", "sky", "person", "car", "truck",
    "bus", "train", "motorcycle", "bicycle")

#: ``datasets/deepscene_remap.py``: Freiburg Forest's classes and the colours it draws them in
#: ('void' is folded into vegetation).
DEEPSCENE = ("trail", "grass", "vegetation", "obstacle", "sky")
DEEPSCENE_COLORS = ((170, 170, 170), (0, 255, 0), (102, 102, 51), (0, 0, 0), (0, 120, 255))

#: ``datasets/mhp_remap.py``: Multi-Human Parsing's 59 ids folded into 21 classes.
MHP_21 = (
    "void", "hat/helmet/headwear", "face", "hair", "arm", "hand", "shirt", "jacket/coat",
    "dress/robe", "bikini/bra", "torso_skin", "pants", "shorts", "socks/stockings", "shoe/boot",
    "leg", "foot", "backpack/purse/bag", "sunglasses/eyewear", "other_accessory", "other_item")

#: ``datasets/sun_remap.py``: SUN RGB-D's 38 ids folded into 21 classes.
SUN_RGBD_21 = (
    "other", "wall", "floor", "cabinet/shelves/bookshelf/dresser", "bed/pillow", "chair",
    "sofa", "table", "door", "window", "picture/tv/mirror", "blinds/curtain", "clothes",
    "ceiling", "books", "fridge", "person", "toilet", "sink", "lamp", "bathtub")

#: pytorch-segmentation's ``--dataset`` names → their classes (``get_dataset``: voc, voc_aug
#: and coco train the 21 VOC classes). Its ``nyu`` set defines no class names.
PYTORCH_SEGMENTATION_CLASSES: dict[str, tuple[str, ...]] = {
    "voc": VOC_CATEGORIES, "voc_aug": VOC_CATEGORIES, "coco": VOC_CATEGORIES,
    "cityscapes": CITYSCAPES_21, "deepscene": DEEPSCENE, "mhp": MHP_21, "sun": SUN_RGBD_21}


#: The released Caffe nets' (fcn.berkeleyvision.org's ``voc_layers.py``, pytorch-fcn's
#: ``mean_bgr``) mean pixel, subtracted from 0..255 BGR pixels; no std.
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)


def released_meta(num_classes: int) -> Any:
    """The CheckpointMeta of a released Caffe FCN (a file in their layout, e.g. pytorch-fcn's
    ``fcn8s_from_caffe.pth``): BGR, their mean pixel subtracted in pixel units (mean m/255 and
    std 1/255 on 0–1 pixels), and with 21 classes PASCAL VOC's."""
    from .checkpoint import CheckpointMeta

    classes = VOC_CATEGORIES if num_classes == len(VOC_CATEGORIES) else ()
    return CheckpointMeta(classes=classes, palette=palette_for(classes) if classes else (),
                          mean=tuple(m / 255 for m in CAFFE_MEAN_BGR), std=(1 / 255,) * 3,
                          color_order="bgr")


def palette_for(classes: tuple[str, ...]) -> tuple[tuple[int, int, int], ...]:
    """The colours a label set is drawn in: DeepScene's own, else the VOC palette."""
    if classes == DEEPSCENE:
        return DEEPSCENE_COLORS
    return voc_colours(len(classes))


def foreign_meta(foreign: Mapping[str, Any]) -> Any:
    """The CheckpointMeta a pytorch-segmentation checkpoint implies: the classes of the data set
    it names (when they match its class count), ImageNet mean/std on RGB (its ``train.py`` and
    segNet both normalise so), its training resolution and its validation figures."""
    from .checkpoint import CheckpointMeta  # torch; this module stays importable without it

    classes = PYTORCH_SEGMENTATION_CLASSES.get(str(foreign.get("dataset")), ())
    if len(classes) != foreign.get("num_classes", len(classes)):
        classes = ()
    resolution = foreign.get("resolution")
    size = tuple(int(v) for v in resolution) if isinstance(resolution, (tuple, list)) \
        and len(resolution) == 2 else None
    metrics = {name: float(foreign[key]) / 100 for key, name in
               (("mean_IoU", "mean_iou"), ("accuracy", "pixel_accuracy"))
               if isinstance(foreign.get(key), (int, float))}
    return CheckpointMeta(classes=classes, palette=palette_for(classes) if classes else (),
                          mean=IMAGENET_MEAN, std=IMAGENET_STD, color_order="rgb",
                          dataset=DatasetInfo(image_size=size), metrics=metrics or None)
