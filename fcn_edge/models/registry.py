"""The backbone registry: one :class:`BackboneSpec` per backbone, registered once, here.

Every fact about a backbone that code outside its own module needs lives in its record — the
FCN class, its skip taps and their strides, its first convolution, how a torchvision ImageNet
classifier's keys map onto it and which keys recognise such a file or one of its FCNs, the
layouts it comes in, the paper recipe's learning rate. Config validation, the CLI's choices,
``create_model``, weight loading and detection, ``fcn-edge checks`` and ``fcn-edge models`` all
read the records, so adding a backbone is one ``register(BackboneSpec(...))`` below plus the
module that builds it. This is timm's pretrained-config idea (its ``_registry`` and
``_builder`` read a variant's first conv and classifier from one record), kept to one file.

Why the records name their classes as ``"module:attribute"`` strings, resolved on first use:
``fcn_edge.config`` validates backbones and the CLI lists them, and neither may import torch
(``fcn-edge run`` and ``--help`` run on boxes without it). So this module imports nothing but
the standard library and ``fcn_edge.errors``, and ``fcn_edge.models`` loads its submodules
lazily (PEP 562) so that importing this one does not pull in the torch-built models. A record
may also hold the class itself (a test registers one defined in the test).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

from ..errors import InputError

#: ``"package.module:attribute"``, imported on first use, or the object itself.
Ref = Union[str, Callable[..., Any]]

#: The model layouts (``ModelConfig.layout``): ``edge`` (no 100-pixel input padding, every
#: backbone) and ``reference`` (layer for layer the released Caffe nets).
MODEL_LAYOUTS = ("edge", "reference")
#: The strides the FCN head fuses (paper §4.2): every trunk reports a map at each of them.
TAP_STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class BackboneSpec:
    """What fcn-edge knows about one backbone.

    Attributes:
        name: the ``ModelConfig.backbone`` / ``--backbone`` value.
        fcn: the :class:`~fcn_edge.models.fcn.FCN` subclass that builds it from a ModelConfig.
        classifier: its ImageNet classifier with torchvision's key names (tests load one's
            weights into the FCN through the torchvision path), or None.
        taps: ``(stride, layer)`` of the maps the head reads, strides 8, 16 and 32, e.g.
            ``((8, "pool3"), (16, "pool4"), (32, "fc7"))``.
        first_conv: the first convolution's weight in the FCN's keys: widened for extra input
            channels (``channels.py``) and read to tell a file's channel count.
        default_lr: the "paper" recipe's SGD learning rate (§4.1).
        adamw_lr: AdamW's learning rate (``--optimizer adamw``, short CPU runs from scratch).
        fc_layers: whether the trunk ends in fc6/fc7 convolutions (§3.1), whose width
            ``fc_channels`` sets; ResNet's trunk is convolutional already.
        layouts: the model layouts it comes in (``MODEL_LAYOUTS``).
        torchvision_fc: the classifier's Linear layers → the FCN convolutions they become
            (§3.1); the one mapped to ``score_fr`` is kept only when the class counts match.
        torchvision_renames: a function returning ``{torchvision module: FCN module}`` for the
            trunk's renamed layers (VGG16's ``features.0`` → ``conv1_1``); None when the FCN
            keeps torchvision's trunk names. Layers of a renamed group without a new name hold
            no FCN tensor and are dropped.
        torchvision_dropped: module prefixes of the classifier that are no part of the FCN and
            are skipped when its file initialises one (GoogLeNet's auxiliary classifiers,
            ``aux1``/``aux2``, which torchvision's published file holds).
        torchvision_signs: keys every torchvision state dict of this classifier holds.
        fcn_sign: a key every FCN state dict of this trunk holds.
        summary: one line for listings and docs.

    Detection tries the records in registration order: a record's signs must not be matched
    by a file of a backbone registered after it (VGG16's classifier also holds AlexNet's
    ``features.10.weight``, so VGG16 comes first).
    """

    name: str
    fcn: Ref
    taps: tuple[tuple[int, str], ...]
    first_conv: str
    default_lr: float
    torchvision_fc: Mapping[str, str]
    torchvision_signs: tuple[str, ...]
    fcn_sign: str
    classifier: Ref | None = None
    fc_layers: bool = True
    layouts: tuple[str, ...] = ("edge",)
    torchvision_renames: Ref | None = None
    torchvision_dropped: tuple[str, ...] = ()
    adamw_lr: float = 1e-3
    summary: str = ""

    def __post_init__(self) -> None:
        if tuple(s for s, _ in self.taps) != TAP_STRIDES:
            raise InputError(f"backbone {self.name!r}: taps must give strides "
                             f"{TAP_STRIDES} in order, got {self.taps!r}")
        unknown = [lay for lay in self.layouts if lay not in MODEL_LAYOUTS]
        if unknown or "edge" not in self.layouts:
            raise InputError(f"backbone {self.name!r}: layouts must include 'edge' and come "
                             f"from {', '.join(MODEL_LAYOUTS)}, got {self.layouts!r}")
        if not (self.default_lr > 0 and self.adamw_lr > 0):
            raise InputError(f"backbone {self.name!r}: default_lr and adamw_lr must be positive")

    def build_fcn(self, config: Any) -> Any:
        """The randomly initialised FCN of this backbone for ``config`` (a ModelConfig)."""
        return resolve(self.fcn)(config)

    def renames(self) -> dict[str, str]:
        """torchvision module → FCN module: the classifier's and the trunk's renamed layers."""
        trunk = resolve(self.torchvision_renames)() if self.torchvision_renames else {}
        return {**trunk, **self.torchvision_fc}


_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec``; a name registered twice is an error (``unregister`` it first)."""
    if spec.name in _REGISTRY:
        raise InputError(f"backbone {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> BackboneSpec:
    """Remove and return the record of ``name`` (for tests that register their own)."""
    return _REGISTRY.pop(get_backbone(name).name)


def backbone_names() -> tuple[str, ...]:
    """The registered backbones, in registration order."""
    return tuple(_REGISTRY)


def backbones() -> tuple[BackboneSpec, ...]:
    """The registered records, in registration order."""
    return tuple(_REGISTRY.values())


def get_backbone(name: str) -> BackboneSpec:
    """The record of ``name``; an InputError listing the registered ones if there is none."""
    spec = _REGISTRY.get(name)
    if spec is None:
        raise InputError(f"unknown backbone {name!r}; choose one of "
                         f"{', '.join(_REGISTRY)}")
    return spec


def resolve(ref: Ref) -> Any:
    """The object ``ref`` names: ``"package.module:attribute"`` imported now, else ``ref``."""
    if not isinstance(ref, str):
        return ref
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


# --- the backbones -------------------------------------------------------------------------

register(BackboneSpec(
    name="vgg16", fcn="fcn_edge.models.vgg:FCNVGG16", classifier="fcn_edge.models.vgg:VGG16",
    taps=((8, "pool3"), (16, "pool4"), (32, "fc7")), first_conv="conv1_1.weight",
    default_lr=1e-4,  # §4.1: "fixed learning rates of 10⁻³ and 10⁻⁴ for FCN-AlexNet and -VGG16"
    layouts=("edge", "reference"),
    torchvision_fc={"classifier.0": "fc6", "classifier.3": "fc7", "classifier.6": "score_fr"},
    torchvision_renames="fcn_edge.models.vgg:torchvision_renames",
    torchvision_signs=("features.28.weight", "classifier.6.weight"), fcn_sign="conv5_3.weight",
    summary="the paper's best net (Table 1); the only one with the reference layout"))

register(BackboneSpec(
    name="alexnet", fcn="fcn_edge.models.alexnet:FCNAlexNet",
    classifier="fcn_edge.models.alexnet:AlexNet",
    taps=((8, "features.2"), (16, "features.5"), (32, "fc7")), first_conv="features.0.weight",
    default_lr=1e-3,  # §4.1
    torchvision_fc={"classifier.1": "fc6", "classifier.4": "fc7", "classifier.6": "score_fr"},
    torchvision_signs=("features.10.weight", "classifier.6.weight"),
    fcn_sign="features.10.weight",
    summary="paper Table 1; the fastest of the paper's nets"))

register(BackboneSpec(
    name="resnet18", fcn="fcn_edge.models.resnet:FCNResNet18",
    classifier="fcn_edge.models.resnet:ResNet18",
    taps=((8, "layer2"), (16, "layer3"), (32, "layer4")), first_conv="conv1.weight",
    # Not in the paper: with batch normalisation it trains well at 10⁻², as torchvision's
    # segmentation recipes do.
    default_lr=1e-2, fc_layers=False, torchvision_fc={"fc": "score_fr"},
    torchvision_signs=("layer4.1.conv2.weight", "fc.weight"), fcn_sign="layer4.1.conv2.weight",
    summary="the edge default (as jetson-inference's FCN-ResNet18); no fc6/fc7"))


def _mobilenet_v3(size: str, stride8: int, stride16: int, last_conv: int,
                  summary: str) -> BackboneSpec:
    """MobileNetV3-``size``: taps at the last block of strides 8 and 16 (``features.N``) and,
    at 32, the classifier's hidden Linear convolutionalised as ``conv_head`` (mobilenet.py says
    why). Signed by its last 1×1 convolution, ``features.{last_conv}.0``: at that index the
    other size has an inverted residual (``features.N.block…``) or nothing, so neither size's
    files match the other's record."""
    last = f"features.{last_conv}.0.weight"
    return BackboneSpec(
        name=f"mobilenet_v3_{size}",
        fcn=f"fcn_edge.models.mobilenet:FCNMobileNetV3{size.title()}",
        classifier=f"fcn_edge.models.mobilenet:mobilenet_v3_{size}",
        taps=((8, f"features.{stride8}"), (16, f"features.{stride16}"), (32, "conv_head")),
        first_conv="features.0.0.weight",
        # Not in the paper: batch normalised, so 10⁻² as ResNet18; torchvision trains
        # lraspp_mobilenet_v3_large at its segmentation script's default 10⁻²
        # (references/segmentation/train.py @ 058f331cc652).
        default_lr=1e-2, fc_layers=False,
        # From scratch, AdamW at the others' 10⁻³ left FCN-8s predicting background after 400
        # scenes (validation mean IU 0.13); 5·10⁻³ reached 0.38, 10⁻² 0.31 (200 scenes of
        # 128×128, 2 epochs of batch 4, standard scenes; GoogLeNet 0.40 at 10⁻³ there).
        adamw_lr=5e-3,
        torchvision_fc={"classifier.0": "conv_head", "classifier.3": "score_fr"},
        torchvision_signs=(last, "classifier.3.weight"), fcn_sign=last, summary=summary)


register(_mobilenet_v3("large", 6, 12, last_conv=16,
                       summary="depthwise and squeeze-excitation, for real time on a CPU"))
register(_mobilenet_v3("small", 3, 8, last_conv=12,
                       summary="MobileNetV3-Large's small sibling: a quarter of its FLOPs"))

register(BackboneSpec(
    name="googlenet", fcn="fcn_edge.models.googlenet:FCNGoogLeNet",
    classifier="fcn_edge.models.googlenet:GoogLeNet",
    taps=((8, "inception3b"), (16, "inception4e"), (32, "inception5b")),
    first_conv="conv1.conv.weight",
    # §4.1 trained FCN-GoogLeNet at 5·10⁻⁵ (Caffe's net, no batch normalisation, summed loss);
    # torchvision's has batch normalisation after every convolution, like ResNet18: 10⁻².
    default_lr=1e-2, fc_layers=False, torchvision_fc={"fc": "score_fr"},
    torchvision_dropped=("aux1.", "aux2."),
    torchvision_signs=("inception5b.branch1.conv.weight", "fc.weight"),
    fcn_sign="inception5b.branch1.conv.weight",
    summary="paper Table 1 (torchvision's layout: BN, 3×3 '5×5' branch); no fc6/fc7"))


# --- published architectures ---------------------------------------------------------------

@dataclass(frozen=True)
class ArchitectureSpec:
    """A published segmentation architecture rebuilt with its source's exact layout, for the
    weights people already hold (not the paper's skip nets): ``ModelConfig.name`` names it.

    Attributes:
        name: the ``ModelConfig.name`` (``fcn_resnet50``), as its source names it.
        build: ``"module:function"`` building the model from a ModelConfig (``model.config``
            set), randomly initialised.
        backbone: its trunk in words (``resnet50``): recorded in configs and artifacts; it is
            not one of the paper nets' registered backbones.
        output_stride: the stride of the map its head scores, before the upsampling.
        source: where its layout was read, with the commit.
        summary: one line for listings and docs.
    """

    name: str
    build: Ref
    backbone: str
    output_stride: int
    source: str
    summary: str = ""

    def build_model(self, config: Any) -> Any:
        """The randomly initialised model of this architecture for ``config``."""
        return resolve(self.build)(config)


_ARCHITECTURES: dict[str, ArchitectureSpec] = {}


def register_architecture(spec: ArchitectureSpec) -> ArchitectureSpec:
    """Add ``spec``; its name must differ from every other architecture and variant."""
    if spec.name in _ARCHITECTURES or spec.name in ("fcn32s", "fcn16s", "fcn8s"):
        raise InputError(f"architecture {spec.name!r} is already registered")
    _ARCHITECTURES[spec.name] = spec
    return spec


def architecture_names() -> tuple[str, ...]:
    """The registered published architectures, in registration order."""
    return tuple(_ARCHITECTURES)


def architectures() -> tuple[ArchitectureSpec, ...]:
    """The registered published architectures' records, in registration order."""
    return tuple(_ARCHITECTURES.values())


def find_architecture(name: str) -> ArchitectureSpec | None:
    """The record of ``name``, or None when it is not a published architecture."""
    return _ARCHITECTURES.get(name)


_TORCHVISION = ("pytorch/vision torchvision/models/segmentation/fcn.py @ aecbb1501bbe, "
                "_utils.py @ 058f331cc652, resnet.py @ f50e776b051d")
_JETSON = ("dusty-nv/pytorch-segmentation @ 16882772bc76 on dusty-nv/vision v0.3.0 @ "
           "30e577ad5fdc (segmentation/segmentation.py, _utils.py)")
for _name, _stride, _source, _what in (
        ("fcn_resnet18", 32, _JETSON, "jetson-inference's FCN-ResNet18 (segNet)"),
        ("fcn_resnet34", 32, _JETSON, "jetson-inference's trainer's FCN-ResNet34"),
        ("fcn_resnet50", 8, _TORCHVISION, "torchvision's FCN-ResNet50 (dilated, COCO/VOC)"),
        ("fcn_resnet101", 8, _TORCHVISION, "torchvision's FCN-ResNet101 (dilated, COCO/VOC)")):
    register_architecture(ArchitectureSpec(
        name=_name, build="fcn_edge.models.torchvision_fcn:from_config",
        backbone=_name.split("_")[1], output_stride=_stride, source=_source, summary=_what))
