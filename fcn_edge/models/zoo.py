"""The pretrained zoo: where published weights come from, what they mean, and how they become
a file every fcn-edge command deploys.

One :class:`PretrainedEntry` per published file, registered once, at the bottom of this module:
the architecture that reads it, the classes and palette its labels mean, the normalisation and
colour order it was trained with, its native input size, the URL and the hash its source
publishes (if it publishes one: a SHA-256, or pytorch-fcn's MD5), its licence and the parameter
count the source states (if it states one). ``fcn-edge zoo`` lists the entries (with the
parameter count computed from our model beside the published one, so a layout that drifts
shows); :func:`fetch` downloads one (``trust.py``: the published hash, or trust on first use
where none is published) and :func:`fcn_edge.export.zoo_prepare.prepare` (in ``export``: it
builds models and imports ONNX, which ``models`` may not) turns it into the file a command
deploys: an fcn-edge checkpoint for torchvision's state dicts and the released Caffe FCNs
pytorch-fcn converted, a self-describing ONNX for jetson-inference's archives.

Like the backbone registry (``registry.py``), this module imports neither torch nor the models:
an entry names its builder as ``"module:attribute"`` (or a function that imports torch only
when called), resolved only when parameters are counted or a file prepared, so listing the zoo
and fetching work on a box without the training stack. Nothing downloads at import; only
:func:`fetch` and :func:`prepare`, called on purpose, do, and they say so in the log first.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import Log
from ..runtime.processing import IMAGENET_MEAN, IMAGENET_STD
from .archive import Archive
from .download import _expected_hash, _file_name, cache_dir, hash_algorithm, hash_hex
from .pretrained_data import (CAFFE_MEAN_BGR, CITYSCAPES_21, DEEPSCENE, MHP_21, SUN_RGBD_21,
                              VOC_CATEGORIES)
from .registry import Ref, resolve

#: The colour orders an entry's input may have (the runtime's ``color_order`` values).
COLOR_ORDERS = ("rgb", "bgr")
#: What ``fcn-edge zoo`` shows for a hash or parameter count the source does not publish.
NOT_PUBLISHED = "none published"


@dataclass(frozen=True, kw_only=True)
class PretrainedEntry:
    """What fcn-edge knows about one published weights file.

    Attributes:
        name: ``source/model``, the name ``fcn-edge fetch`` takes (``torchvision/fcn_resnet50``).
        architecture: the model the file's state dict fits, in words fcn-edge's code uses.
        build: ``"module:function"`` (or the callable) that builds that model, randomly
            initialised, with the file's exact layout, called as ``build(num_classes=
            len(classes), aux=aux)``: to count parameters, and to load a state dict into.
        classes: the label names, in label order, as the source defines them.
        palette: ``"module:function"`` (or the callable) returning the colours for
            ``len(classes)`` labels (an N×3 uint8 array).
        mean, std: per-channel normalisation of 0–1 pixels, in ``color_order``.
        color_order: ``rgb`` or ``bgr``: the channel order the network expects.
        input_size: an int: the image's shorter side is resized to it (torchvision's
            ``resize_size``); a pair: the fixed ``(height, width)`` the network takes; None:
            any size, as it comes (the Caffe FCNs).
        url: where the source publishes the file.
        file: the cache file's name where the URL's path ends in none (Google Drive's
            ``uc?id=…``): the name the source saves it under; empty: the URL's last segment.
        sha256: its SHA-256 as the source publishes it (torchvision: the 8-digit prefix in the
            file name, as torch.hub's ``check_hash`` reads it); None where the source publishes
            none: the first download's is recorded and later ones must match (``trust.py``).
        md5: its MD5 (32 hex digits), for a source that publishes that instead (pytorch-fcn);
            checked as strictly as a published SHA-256.
        licence: the licence the source states for the code and weights.
        num_params: the parameter count the source publishes for this file; None if none.
        source: where these facts were read, with the commit.
        aux: whether the file holds the auxiliary head (torchvision's do).
        archive: for a ``.tar.gz`` of an ONNX graph and its label files (jetson-inference's),
            what is in it; None for a state dict.
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
    input_size: int | tuple[int, int] | None
    url: str
    licence: str
    source: str
    file: str = ""
    sha256: str | None = None
    md5: str | None = None
    num_params: int | None = None
    aux: bool = True
    archive: Archive | None = None
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
        if self.sha256 is not None and self.md5 is not None:
            raise InputError(f"pretrained entry {self.name!r}: give the one hash its source "
                             f"publishes, sha256 or md5")
        if self.published_hash is not None:  # malformed: refused at registration, not later
            _expected_hash(self.published_hash)
        if not self.file:
            _file_name(self.url)  # the cache file is named after the URL

    @property
    def file_name(self) -> str:
        """The name of the downloaded file in the cache: the archive's, else the URL's."""
        if self.archive is not None:
            return self.archive.file
        return self.file or _file_name(self.url)

    @property
    def input_size_text(self) -> str:
        """``short side 520``, ``256x512`` (height x width) or ``any``: the native input size."""
        if self.input_size is None:
            return "any"
        if isinstance(self.input_size, int):
            return f"short side {self.input_size}"
        return "x".join(str(n) for n in self.input_size)

    @property
    def sha256_text(self) -> str:
        """The published SHA-256, or ``none published``."""
        return self.sha256 or NOT_PUBLISHED

    @property
    def published_hash(self) -> str | None:
        """The published hash as ``download`` takes it (hex, or ``md5:HEX``), or None."""
        return f"md5:{self.md5}" if self.md5 is not None else self.sha256

    @property
    def hash_text(self) -> str:
        """``sha256 1167a1af``, ``md5 d3eb…`` or ``sha256 none published``: what the listing
        shows, named by its algorithm."""
        published = self.published_hash
        if published is None:
            return f"sha256 {NOT_PUBLISHED}"
        return f"{hash_algorithm(published)} {hash_hex(published)}"

    def palette_colors(self) -> Any:
        """The colours of ``classes``: an N×3 uint8 array."""
        return resolve(self.palette)(len(self.classes))

    def build_model(self) -> Any:
        """fcn-edge's model for this file, randomly initialised (needs torch)."""
        return resolve(self.build)(num_classes=len(self.classes), aux=self.aux)

    def count_params(self) -> int:
        """Parameters of fcn-edge's model for this file, built on torch's ``meta`` device
        (shapes only: no memory, no arithmetic). Needs torch."""
        import torch

        from ._builder import count_parameters

        with torch.device("meta"):
            return count_parameters(self.build_model())

    def cached_path(self, cache: str | Path | None = None) -> Path:
        """Where :func:`fetch` puts the file: ``cache`` (default: :func:`cache_dir`); an
        archive goes into a folder named after the source (``jetson/``), where it is unpacked
        beside itself, as jetson-inference's ``data/networks`` holds them."""
        base = Path(cache if cache is not None else cache_dir())
        if self.archive is not None:
            base = base / self.name.split("/")[0]
        return base / self.file_name

    def prepared_path(self, cache: str | Path | None = None) -> Path:
        """The file :func:`prepare` writes: ``<cache>/torchvision/fcn_resnet50.pt`` (an
        fcn-edge checkpoint) or ``<cache>/jetson/<folder>/fcn_resnet18.fcn-edge.onnx``."""
        if self.archive is None:
            return Path(cache if cache is not None else cache_dir()) / f"{self.name}.pt"
        model = Path(self.archive.model)
        return (self.cached_path(cache).parent / self.archive.folder
                / f"{model.stem}.fcn-edge{model.suffix}")

    def cache_state(self, cache: str | Path | None = None) -> str:
        """``prepared`` (ready to deploy), ``yes`` (downloaded), ``partial`` (an interrupted
        download to resume) or ``no``."""
        path = self.cached_path(cache)
        if self.prepared_path(cache).is_file():
            return "prepared"
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


def is_zoo_name(text: str | Path) -> bool:
    """Whether a command's model argument names a zoo entry: a registered name that is not
    a path on disk (a file or folder that exists always means itself)."""
    return str(text) in _ZOO and not Path(text).exists()


def fetch(name: str, cache: str | Path | None = None, *, weights: str | Path | None = None,
          sha256: str | None = None, progress: bool = True, log: Log = print,
          timeout: float = 30.0) -> Path:
    """The verified file of entry ``name``: ``weights`` (a local copy, for offline boxes) or
    the download into ``cache`` (default: :func:`cache_dir`), resuming an interrupted one.

    It must match the published SHA-256; where the source publishes none, ``sha256`` (a pin),
    else the one recorded at the first download, else this file's is recorded (``trust.py``).
    """
    from . import trust

    entry = get(name)
    verified = trust.fetch_verified(entry, cache, weights, sha256, progress=progress, log=log,
                                    timeout=timeout)
    trust.record(entry, verified, log)
    return verified.path


# --- the entries ---------------------------------------------------------------------------

_TORCHVISION = dict(
    classes=VOC_CATEGORIES, palette="fcn_edge.runtime.palette:voc_palette",
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

# jetson-inference's FCN-ResNet18 family: dusty-nv/jetson-inference @ 45da40a8f3c1
# (data/networks/models.json, tools/download-models.sh: URL, archive, folder, files; no hashes;
# c/segNet.cpp: ONNX input RGB, pixel/255, ImageNet mean/std; input_0 → output_0, the coarse
# grid segNet upsamples), trained by dusty-nv/pytorch-segmentation @ 16882772bc76 (class lists
# in pretrained_data.py; train.py trains without the aux head unless --aux-loss, and
# onnx_export.py builds with aux_loss=None). The size in the name is width x height (train.py
# prints resolution[1] x resolution[0]); input_size is (height, width).

#: dataset key in the name → (classes, dataset in words, where the classes were read).
_JETSON_DATASETS = {
    "cityscapes": (CITYSCAPES_21, "Cityscapes", "datasets/cityscapes_remap.py"),
    "deepscene": (DEEPSCENE, "DeepScene Freiburg Forest", "datasets/deepscene_remap.py"),
    "mhp": (MHP_21, "Multi-Human Parsing", "datasets/mhp_remap.py"),
    "voc": (VOC_CATEGORIES, "Pascal VOC", "train.py (torchvision's VOC labels)"),
    "sun": (SUN_RGBD_21, "SUN RGB-D", "datasets/sun_remap.py"),
}
#: models.json: key, the nvidia.box.com file id of its url, its dir (the tar is dir.tar.gz).
_JETSON_MODELS = (
    ("fcn-resnet18-cityscapes-512x256", "k7s7gdgi098309fndm2xbssj553vf71s",
     "FCN-ResNet18-Cityscapes-512x256"),
    ("fcn-resnet18-cityscapes-1024x512", "9aqg4gpjmk7ipz4z0raa5mvs35om6emy",
     "FCN-ResNet18-Cityscapes-1024x512"),
    ("fcn-resnet18-cityscapes-2048x1024", "ylh3d2qk8qvitalq8sy803o7avrb6w0h",
     "FCN-ResNet18-Cityscapes-2048x1024"),
    ("fcn-resnet18-deepscene-576x320", "jm0zlezvweiimpzluohg6453s0u0nvcv",
     "FCN-ResNet18-DeepScene-576x320"),
    ("fcn-resnet18-deepscene-864x480", "gooux9b5nknk8wlk60ou9s2unpo760iq",
     "FCN-ResNet18-DeepScene-864x480"),
    ("fcn-resnet18-mhp-512x320", "dgaw0ave3bdws1t5ed333ftx5dbpt9zv", "FCN-ResNet18-MHP-512x320"),
    ("fcn-resnet18-mhp-640x360", "50mvlrjwbq9ugkmnnqp1sm99g2j21sfn", "FCN-ResNet18-MHP-640x360"),
    ("fcn-resnet18-voc-320x320", "p63pgrr6tm33tn23913gq6qvaiarydaj",
     "FCN-ResNet18-Pascal-VOC-320x320"),
    ("fcn-resnet18-voc-512x320", "njup7f3vu4mgju89kfre98olwljws5pk",
     "FCN-ResNet18-Pascal-VOC-512x320"),
    ("fcn-resnet18-sun-512x400", "5vs9t2wah5axav11k8o3l9skb7yy3xgd",
     "FCN-ResNet18-SUN-RGBD-512x400"),
    ("fcn-resnet18-sun-640x512", "z5llxysbcqd8zzzsm7vjqeihs7ihdw20",
     "FCN-ResNet18-SUN-RGBD-640x512"),
)


def _jetson_entry(key: str, box_id: str, folder: str) -> PretrainedEntry:
    dataset = key.split("-")[2]
    classes, words, remap = _JETSON_DATASETS[dataset]
    width, height = (int(n) for n in key.rsplit("-", 1)[1].split("x"))
    palette = ("fcn_edge.models.archive:deepscene_palette" if dataset == "deepscene" else
               "fcn_edge.models.archive:jetson_palette")
    return PretrainedEntry(
        name=f"jetson/{key}", architecture="jetson-inference fcn_resnet18 (ONNX, coarse grid)",
        build="fcn_edge.models.torchvision_fcn:fcn_resnet18", aux=False, classes=classes,
        palette=palette, mean=IMAGENET_MEAN, std=IMAGENET_STD, color_order="rgb",
        input_size=(height, width), url=f"https://nvidia.box.com/shared/static/{box_id}.gz",
        archive=Archive(file=f"{folder}.tar.gz", folder=folder), licence="MIT (jetson-inference)",
        source="dusty-nv/jetson-inference data/networks/models.json @ 45da40a8f3c1; classes: "
               f"dusty-nv/pytorch-segmentation {remap} @ 16882772bc76",
        notes=f"trained on {words}; the archive's classes.txt and colors.txt win over these "
              + ("classes and DeepScene's published colours" if dataset == "deepscene" else
                 "classes and segNet's default colours (VOC colour map from 1)"))


for _model in _JETSON_MODELS:
    register(_jetson_entry(*_model))


# The paper's own FCN-32s/16s/8s on VGG16 (PASCAL VOC), released as Caffe models by
# shelhamer/fcn.berkeleyvision.org @ 1305c7378a9f (README: "the same license as Caffe (BSD-2)
# and the Caffe-bundled models (that is, unrestricted use)"; voc_layers.py: BGR, mean pixel) and
# converted to bare PyTorch state dicts, layer names and C×C×k×k upsampling kernels as in Caffe,
# by wkentaro/pytorch-fcn @ 4b988509bfd1a613d5e8482595a1c6654047d69b (MIT): URL, MD5 and file
# name in torchfcn/models/fcn{32,16,8}s.py, class names and mean_bgr in torchfcn/datasets/voc.py,
# the conversion in examples/voc/model_caffe_to_pytorch.py. Its FCN8sAtOnce is not an entry: its
# forward scales pool4 by 0.01 and pool3 by 0.0001 before score_pool4/score_pool3, which the
# reference layout (the staged nets') does not, so its weights would load and score wrongly.

#: ``VOCClassSegBase.class_names``: VOC's 21 labels as pytorch-fcn spells them.
PYTORCH_FCN_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "potted plant",
    "sheep", "sofa", "train", "tv/monitor")


def released_fcn(variant: str, num_classes: int = 21, aux: bool = False, **options: Any) -> Any:
    """fcn-edge's ``variant`` in the released Caffe nets' layout (``reference``: conv1_1 pads
    by 100, Caffe's crops), randomly initialised; ``aux`` is the zoo's build signature (these
    nets have no auxiliary head); ``options`` go to ``create_model`` (tests: ``fc_channels``)."""
    from ._builder import create_model

    return create_model(variant, num_classes=num_classes, backbone="vgg16",
                        layout="reference", **options)


#: variant → (Google Drive file id, MD5, URL scheme as published, mIU on seg11valid).
_PYTORCH_FCN = {
    "fcn32s": ("11k2Q0bvRQgQbT6-jYWeh6nmAsWlSCY3f", "d3eb467a80e7da0468a20dfcbc13e6c8", "https",
               "63.6"),
    "fcn16s": ("1bctu58B6YH9bu6lBBSBB2rUeGlGhYLoP", "a2d4035f669f09483b39c9a14a0d6670", "http",
               "65.0"),
    "fcn8s": ("1ieXWyoG68xqoHJPWdyrDyaIaaWlfmUxI", "de93e540ec79512f8770033849c8ae89", "http",
              "65.5"),
}

for _variant, (_drive_id, _md5, _scheme, _miou) in _PYTORCH_FCN.items():
    register(PretrainedEntry(
        name=f"pytorch-fcn/{_variant}", architecture="FCN-VGG16 reference layout (Caffe, pad 100)",
        build=partial(released_fcn, _variant), aux=False, classes=PYTORCH_FCN_CLASSES,
        palette="fcn_edge.runtime.palette:voc_palette",
        # voc.py transform: RGB → BGR, minus mean_bgr on 0..255 pixels, no std.
        mean=tuple(m / 255 for m in CAFFE_MEAN_BGR), std=(1 / 255,) * 3, color_order="bgr",
        input_size=None, url=f"{_scheme}://drive.google.com/uc?id={_drive_id}",
        file=f"{_variant}_from_caffe.pth", md5=_md5,
        licence="MIT (pytorch-fcn); weights BSD-2 / unrestricted (fcn.berkeleyvision.org)",
        source="wkentaro/pytorch-fcn torchfcn/models/" + _variant + ".py, datasets/voc.py @ "
               "4b988509bfd1; shelhamer/fcn.berkeleyvision.org README @ 1305c7378a9f",
        notes=f"the paper's Caffe net, trained on VOC 2011 train + SBD (not SBD val), {_miou} mIU "
              f"on seg11valid; any input size (VOC images are at most 500 px a side); Google "
              f"Drive may answer with a confirmation page: download in a browser, --weights"))
