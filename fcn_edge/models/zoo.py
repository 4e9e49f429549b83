"""The pretrained zoo: where published weights come from and what they mean.

One :class:`PretrainedEntry` per published file, registered once, at the bottom of this module:
the architecture that reads it, the classes and palette its labels mean, the normalisation and
colour order it was trained with, its native input size, the URL and the SHA-256 its source
publishes, its licence and the parameter count the source states. ``fcn-edge zoo`` lists the
entries (with the parameter count computed from our model beside the published one, so a
layout that drifts shows) and ``fcn-edge fetch NAME`` downloads one with
:func:`fcn_edge.models.download.download`.

Like the backbone registry (``registry.py``), this module imports neither torch nor the models:
an entry names its builder as ``"module:attribute"``, resolved only when parameters are
counted, so listing the zoo and fetching work on a box without the training stack. Nothing
downloads here; only :func:`fetch`, called on purpose, does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import Log
from ..runtime.processing import IMAGENET_MEAN, IMAGENET_STD
from .download import _expected_hash, _file_name, cache_dir, download
from .registry import Ref, resolve

#: The colour orders an entry's input may have (the runtime's ``color_order`` values).
COLOR_ORDERS = ("rgb", "bgr")


@dataclass(frozen=True)
class PretrainedEntry:
    """What fcn-edge knows about one published weights file.

    Attributes:
        name: ``source/model``, the name ``fcn-edge fetch`` takes (``torchvision/fcn_resnet50``).
        architecture: the model the file's state dict fits, in words fcn-edge's code uses.
        build: ``"module:function"`` (or the callable) that builds that model, randomly
            initialised, with the file's exact layout; it is only called to count parameters.
        classes: the label names, in label order, as the source defines them.
        palette: ``"module:function"`` (or the callable) returning the colours for
            ``len(classes)`` labels (an N×3 uint8 array).
        mean, std: per-channel normalisation of 0–1 pixels, in ``color_order``.
        color_order: ``rgb`` or ``bgr``: the channel order the network expects.
        input_size: an int: the image's shorter side is resized to it (torchvision's
            ``resize_size``); a pair: the fixed ``(height, width)`` the network takes.
        url: where the source publishes the file.
        sha256: its SHA-256 as the source publishes it (torchvision: the 8-digit prefix in the
            file name, as torch.hub's ``check_hash`` reads it).
        licence: the licence the source states for the code and weights.
        num_params: the parameter count the source publishes for this file.
        source: where these facts were read, with the commit.
        loadable: whether fcn-edge's model for it exists yet (``fetch`` works either way).
        notes: one line for listings and docs.
    """

    name: str
    architecture: str
    build: Ref
    classes: tuple[str, ...]
    palette: Ref
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    color_order: str
    input_size: int | tuple[int, int]
    url: str
    sha256: str
    licence: str
    num_params: int
    source: str
    loadable: bool = True
    notes: str = ""

    def __post_init__(self) -> None:
        if "/" not in self.name:
            raise InputError(f"pretrained entry {self.name!r}: name it source/model")
        if self.color_order not in COLOR_ORDERS:
            raise InputError(f"pretrained entry {self.name!r}: color_order must be one of "
                             f"{', '.join(COLOR_ORDERS)}, got {self.color_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise InputError(f"pretrained entry {self.name!r}: mean and std need 3 values, "
                             f"std positive")
        _expected_hash(self.sha256)  # malformed: refused at registration, not at download
        _file_name(self.url)  # the cache file is named after the URL

    @property
    def file_name(self) -> str:
        """The name of the downloaded file (the URL's), in the cache folder."""
        return _file_name(self.url)

    @property
    def input_size_text(self) -> str:
        """``short side 520`` or ``512x1024``: the native input size in words."""
        if isinstance(self.input_size, int):
            return f"short side {self.input_size}"
        return "x".join(str(n) for n in self.input_size)

    def palette_colors(self) -> Any:
        """The colours of ``classes``: an N×3 uint8 array."""
        return resolve(self.palette)(len(self.classes))

    def count_params(self) -> int:
        """Parameters of fcn-edge's model for this file, built on torch's ``meta`` device
        (shapes only: no memory, no arithmetic). Needs torch."""
        import torch

        from ._builder import count_parameters

        with torch.device("meta"):
            return count_parameters(resolve(self.build)())

    def cached_path(self, cache: str | Path | None = None) -> Path:
        """Where :func:`fetch` puts the file: ``cache`` (default: :func:`cache_dir`)."""
        return Path(cache if cache is not None else cache_dir()) / self.file_name

    def cache_state(self, cache: str | Path | None = None) -> str:
        """``yes`` (downloaded), ``partial`` (an interrupted download to resume) or ``no``."""
        path = self.cached_path(cache)
        if path.is_file():
            return "yes"
        return "partial" if path.with_name(path.name + ".part").is_file() else "no"


_ZOO: dict[str, PretrainedEntry] = {}


def register(entry: PretrainedEntry) -> PretrainedEntry:
    """Add ``entry``; a name registered twice is an error (``unregister`` it first)."""
    if entry.name in _ZOO:
        raise InputError(f"pretrained entry {entry.name!r} is already registered")
    _ZOO[entry.name] = entry
    return entry


def unregister(name: str) -> PretrainedEntry:
    """Remove and return the entry ``name`` (for tests that register their own)."""
    return _ZOO.pop(get(name).name)


def names() -> tuple[str, ...]:
    """The registered names, in registration order."""
    return tuple(_ZOO)


def entries() -> tuple[PretrainedEntry, ...]:
    """The registered entries, in registration order."""
    return tuple(_ZOO.values())


def get(name: str) -> PretrainedEntry:
    """The entry ``name``; an InputError listing the registered names if there is none."""
    entry = _ZOO.get(name)
    if entry is None:
        raise InputError(f"unknown pretrained model {name!r}; choose one of "
                         f"{', '.join(_ZOO)} (fcn-edge zoo lists them)")
    return entry


def fetch(name: str, cache: str | Path | None = None, *, progress: bool = True,
          log: Log = print, timeout: float = 30.0) -> Path:
    """Download the weights of entry ``name`` into ``cache`` (default: :func:`cache_dir`),
    verified against the published hash, resuming an interrupted download; return the path."""
    entry = get(name)
    return download(entry.url, entry.sha256, entry.cached_path(cache), progress=progress,
                    log=log, timeout=timeout)


# --- the entries ---------------------------------------------------------------------------

#: torchvision's ``_VOC_CATEGORIES`` (``torchvision/models/_meta.py``): background and the 20
#: PASCAL VOC classes, in label order; its segmentation weights' ``meta["categories"]``.
TORCHVISION_VOC_CATEGORIES = (
    "__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor")
_TORCHVISION = dict(
    classes=TORCHVISION_VOC_CATEGORIES, palette="fcn_edge.runtime.palette:voc_palette",
    # SemanticSegmentation(resize_size=520): shorter side to 520, ImageNet mean/std, RGB.
    mean=IMAGENET_MEAN, std=IMAGENET_STD, color_order="rgb", input_size=520,
    licence="BSD-3-Clause (torchvision)",
    source="pytorch/vision torchvision/models/segmentation/fcn.py @ aecbb1501bbe (URLs); "
           "its weights API (FCN_ResNet*_Weights: num_params, resize_size, _VOC_CATEGORIES)",
    notes="trained on the COCO train2017 images of the 20 VOC categories; with its aux head")

register(PretrainedEntry(
    name="torchvision/fcn_resnet50", architecture="torchvision fcn_resnet50",
    build="fcn_edge.models.torchvision_fcn:fcn_resnet50",
    url="https://download.pytorch.org/models/fcn_resnet50_coco-1167a1af.pth",
    sha256="1167a1af", num_params=35_322_218, **_TORCHVISION))

register(PretrainedEntry(
    name="torchvision/fcn_resnet101", architecture="torchvision fcn_resnet101",
    build="fcn_edge.models.torchvision_fcn:fcn_resnet101",
    url="https://download.pytorch.org/models/fcn_resnet101_coco-7ecb50ca.pth",
    sha256="7ecb50ca", num_params=54_314_346, **_TORCHVISION))
