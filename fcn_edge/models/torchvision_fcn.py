"""torchvision's ``fcn_resnet50`` / ``fcn_resnet101`` and jetson-inference's ``fcn_resnet18`` /
``fcn_resnet34``, written here with their exact state-dict keys.

torchvision does not import on every box fcn-edge runs on, yet its COCO-trained (VOC-label)
FCNs, and the FCN-ResNet18 family jetson-inference deploys, are the weights people already
hold. This module rebuilds those models so their published state dicts load with
``strict=True`` and compute what their sources' modules compute. They are not the paper's skip
nets: one head on the last stage, upsampled bilinearly to the input (``ModelConfig.name`` is
the architecture, e.g. ``fcn_resnet50``; ``registry.py`` registers each).

Read (not copied) at pytorch/vision:
  * ``torchvision/models/segmentation/fcn.py`` @ aecbb1501bbe28d3dcf29e0fe329182904ad3994
    (``FCNHead``, ``_fcn_resnet``) and its weights-API version (``FCN_ResNet50_Weights``,
    ``FCN_ResNet101_Weights``: ``num_params`` 35,322,218 and 54,314,346, 21 VOC categories);
  * ``torchvision/models/segmentation/_utils.py`` @ 058f331cc6520baf76473e6e21e919fe1b9c1123
    (``_SimpleSegmentationModel``: classifier on ``layer4``, aux head on ``layer3``, each
    upsampled bilinearly with ``align_corners=False`` to the input's size);
  * ``torchvision/models/resnet.py`` @ f50e776b051ddf007b90d7bc8f70b0708c12d008 (``Bottleneck``
    with the stride and dilation on ``conv2``; ``_make_layer``'s stride-to-dilation swap).

  * jetson-inference's trainer, dusty-nv/pytorch-segmentation @
    16882772bc767511d892d134918722011d1ea771 (``train.py``: the checkpoint dict ``{"model",
    "arch", "num_classes", "dataset", "resolution", "args", …}``; ``onnx_export.py``), on its
    torchvision fork dusty-nv/vision branch v0.3.0 @ 30e577ad5fdc6df6e85ef1bd7180da693fe0dd4a
    (``segmentation/segmentation.py``: ``fcn_resnet18``/``fcn_resnet34`` keep every stride, no
    dilation, so the head reads ``layer4`` at stride 32, FCNHead(512) and aux FCNHead(256);
    ``segmentation/_utils.py``: with ``export_onnx=True`` the model returns the classifier's
    coarse grid without upsampling, which segNet upsamples itself: :meth:`TorchvisionFCN.scores`).

The layout, as torchvision publishes it:
  * ``backbone.*``: ResNet50/101 up to ``layer4`` (``IntermediateLayerGetter`` drops ``avgpool``
    and ``fc``: no ``backbone.fc`` key), with ``replace_stride_with_dilation=[False, True,
    True]``: layer3 and layer4 dilate instead of striding, so ``layer4`` is at stride 8.
  * ``classifier.{0,1,4}``: FCNHead(2048): 3×3 conv to 512 (no bias), BN, ReLU (2), Dropout(0.1)
    (3), 1×1 conv to the classes.
  * ``aux_classifier.*``: FCNHead(1024) on ``layer3``; the published weights hold it. It is
    loaded, and computed only when asked (``model(x, aux=True)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelFormatError
from .resnet import BasicBlock, Bottleneck, basic_stage, bottleneck_stage


@dataclass(frozen=True)
class Arch:
    """One architecture: its block, blocks per stage, and whether layer3/layer4 dilate."""

    block: type
    blocks: tuple[int, int, int, int]
    dilated: bool

    @property
    def widths(self) -> tuple[int, int]:
        """Channels of ``layer3`` and ``layer4`` (the aux and main heads' inputs)."""
        return 256 * self.block.expansion, 512 * self.block.expansion


#: torchvision's (dilated, stride 8) and jetson-inference's (undilated, stride 32) FCNs.
ARCHITECTURES = {
    "fcn_resnet18": Arch(BasicBlock, (2, 2, 2, 2), dilated=False),
    "fcn_resnet34": Arch(BasicBlock, (3, 4, 6, 3), dilated=False),
    "fcn_resnet50": Arch(Bottleneck, (3, 4, 6, 3), dilated=True),
    "fcn_resnet101": Arch(Bottleneck, (3, 4, 23, 3), dilated=True),
}


class SegmentationResNet(nn.Module):
    """ResNet to ``layer4`` keyed as torchvision's (no ``fc``); with ``dilated`` (torchvision's
    ``replace_stride_with_dilation=[False, True, True]``) layer3 and layer4 dilate instead of
    striding, so ``layer4`` is at stride 8, else at stride 32."""

    def __init__(self, arch: Arch, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        c_in, dilation = 64, 1
        for index, (planes, n) in enumerate(zip((64, 128, 256, 512), arch.blocks)):
            stride = 1 if index == 0 else 2
            if arch.block is Bottleneck:
                stage, dilation = bottleneck_stage(c_in, planes, n, stride, dilation,
                                                   dilate=arch.dilated and index >= 2)
            else:
                stage = basic_stage(c_in, planes, n, stride)
            setattr(self, f"layer{index + 1}", stage)
            c_in = planes * arch.block.expansion
        for m in self.modules():  # torchvision's initialisation, for models trained from here
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``layer3`` and ``layer4`` maps."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x3 = self.layer3(self.layer2(self.layer1(x)))
        return x3, self.layer4(x3)


class FCNHead(nn.Sequential):
    """3×3 conv to a quarter of the channels, BN, ReLU, Dropout(0.1), 1×1 conv to the classes;
    indices 0, 1 and 4 hold the tensors, as in torchvision."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        inter = in_channels // 4
        super().__init__(nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
                         nn.BatchNorm2d(inter), nn.ReLU(), nn.Dropout(0.1),
                         nn.Conv2d(inter, num_classes, 1))


class TorchvisionFCN(nn.Module):
    """``model(x)`` is N×classes×H×W logits at the input's size.

    ``model(x, aux=True)`` returns ``{"out": ..., "aux": ...}`` as torchvision's model does
    (a model built with ``aux=False`` has no aux head and refuses that); ``model.scores(x)`` is
    the coarse grid before upsampling (what jetson-inference's ONNX files output).
    """

    def __init__(self, arch: str = "fcn_resnet50", num_classes: int = 21,
                 aux: bool = True) -> None:
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ModelFormatError(f"unknown torchvision FCN {arch!r}; choose one of "
                                   f"{', '.join(ARCHITECTURES)}")
        self.arch, self.num_classes = arch, num_classes
        spec = ARCHITECTURES[arch]
        side, last = spec.widths
        self.backbone = SegmentationResNet(spec)
        self.classifier = FCNHead(last, num_classes)
        self.aux_classifier = FCNHead(side, num_classes) if aux else None

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's scores at the last stage's stride (8 or 32), not upsampled."""
        return self.classifier(self.backbone(x)[1])

    #: Whether ``model(x)`` answers both heads (``fcn-edge export --aux``; ``aux_head.py``).
    outputs_aux = False

    def forward(self, x: torch.Tensor, aux: bool | None = None
                ) -> torch.Tensor | dict[str, torch.Tensor]:
        aux = self.outputs_aux if aux is None else aux
        size = x.shape[-2:]
        x3, x4 = self.backbone(x)
        out = F.interpolate(self.classifier(x4), size=size, mode="bilinear",
                            align_corners=False)
        if not aux:
            return out
        if self.aux_classifier is None:
            raise ModelFormatError(f"this {self.arch} was built without its aux head; build "
                                   f"it with aux=True to get the aux output")
        side = F.interpolate(self.aux_classifier(x3), size=size, mode="bilinear",
                             align_corners=False)
        return {"out": out, "aux": side}


def from_config(config: Any) -> TorchvisionFCN:
    """The model a ModelConfig names (``name="fcn_resnet50"``, ``aux``), randomly initialised,
    with ``model.config`` set (what the builder's registry calls)."""
    model = TorchvisionFCN(config.name, config.num_classes, aux=config.aux)
    model.config = config
    model.outputs_aux = bool(config.heads)  # an --aux export's config names both heads
    return model


def fcn_resnet18(num_classes: int = 21, aux: bool = True) -> TorchvisionFCN:
    """jetson-inference's ``fcn_resnet18`` (randomly initialised; load a state dict into it)."""
    return TorchvisionFCN("fcn_resnet18", num_classes, aux)


def fcn_resnet34(num_classes: int = 21, aux: bool = True) -> TorchvisionFCN:
    """jetson-inference's ``fcn_resnet34`` (randomly initialised; load a state dict into it)."""
    return TorchvisionFCN("fcn_resnet34", num_classes, aux)


def fcn_resnet50(num_classes: int = 21, aux: bool = True) -> TorchvisionFCN:
    """torchvision's ``fcn_resnet50`` (randomly initialised; load a state dict into it)."""
    return TorchvisionFCN("fcn_resnet50", num_classes, aux)


def fcn_resnet101(num_classes: int = 21, aux: bool = True) -> TorchvisionFCN:
    """torchvision's ``fcn_resnet101`` (randomly initialised; load a state dict into it)."""
    return TorchvisionFCN("fcn_resnet101", num_classes, aux)


def detect(state: Mapping[str, torch.Tensor]) -> tuple[str, int, bool] | None:
    """``(architecture, classes, aux)`` of a state dict in this layout, or None if it is not
    one: the block type from ``conv3`` (Bottleneck) and the depth from ``layer3``'s blocks."""
    if "classifier.4.weight" not in state or "backbone.conv1.weight" not in state:
        return None
    bottleneck = "backbone.layer1.0.conv3.weight" in state
    depth = 1 + max((int(k.split(".")[2]) for k in state if k.startswith("backbone.layer3.")),
                    default=-1)
    arch = next((name for name, a in ARCHITECTURES.items()
                 if (a.block is Bottleneck) == bottleneck and a.blocks[2] == depth), None)
    if arch is None:
        kind = "Bottleneck" if bottleneck else "BasicBlock"
        raise ModelFormatError(f"a torchvision-layout FCN with {depth} {kind} layer3 blocks; "
                               f"expected {_known_depths()}")
    aux = any(k.startswith("aux_classifier.") for k in state)
    return arch, int(state["classifier.4.weight"].shape[0]), aux


def _known_depths() -> str:
    return ", ".join(f"{a.blocks[2]} {a.block.__name__} ({name})"
                     for name, a in ARCHITECTURES.items())


def check_fits(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """One ModelFormatError naming what is missing, unexpected and mis-shaped, if ``state``
    does not load into ``model`` strictly."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        raise ModelFormatError(f"{model.arch} state dict does not fit: missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}, mis-shaped {shapes[:3]} "
                               f"({len(missing)}/{len(unexpected)}/{len(shapes)} in all)")


def from_state_dict(state: Mapping[str, torch.Tensor]) -> TorchvisionFCN:
    """The FCN a state dict in torchvision's layout describes, with it loaded.

    The architecture is read from the blocks (:func:`detect`), the classes from
    ``classifier.4.weight``, the aux head from its keys; the load is strict, and a file that
    does not fit raises one ModelFormatError naming what was expected and what was found.
    """
    found = detect(state)
    if found is None:
        raise ModelFormatError("not a torchvision FCN state dict: expected backbone.conv1.weight "
                               "and classifier.4.weight, found neither or one")
    model = TorchvisionFCN(*found)
    check_fits(model, state)
    model.load_state_dict(state, strict=True)
    return model
