"""torchvision's ``fcn_resnet50`` / ``fcn_resnet101``, written here with its exact state-dict keys.

torchvision does not import on every box fcn-edge runs on, yet its COCO-trained (VOC-label)
FCNs are the weights people already hold. This module rebuilds those models so their published
state dicts load with ``strict=True`` and compute what torchvision's modules compute.

Read (not copied) at pytorch/vision:
  * ``torchvision/models/segmentation/fcn.py`` @ aecbb1501bbe28d3dcf29e0fe329182904ad3994
    (``FCNHead``, ``_fcn_resnet``) and its weights-API version (``FCN_ResNet50_Weights``,
    ``FCN_ResNet101_Weights``: ``num_params`` 35,322,218 and 54,314,346, 21 VOC categories);
  * ``torchvision/models/segmentation/_utils.py`` @ 058f331cc6520baf76473e6e21e919fe1b9c1123
    (``_SimpleSegmentationModel``: classifier on ``layer4``, aux head on ``layer3``, each
    upsampled bilinearly with ``align_corners=False`` to the input's size);
  * ``torchvision/models/resnet.py`` @ f50e776b051ddf007b90d7bc8f70b0708c12d008 (``Bottleneck``
    with the stride and dilation on ``conv2``; ``_make_layer``'s stride-to-dilation swap).

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

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelFormatError
from .resnet import Bottleneck, bottleneck_stage

#: Blocks per stage (layer1 … layer4) of each architecture.
ARCHITECTURES = {"fcn_resnet50": (3, 4, 6, 3), "fcn_resnet101": (3, 4, 23, 3)}
#: Which stages swap their stride 2 for dilation (torchvision's FCN: layer3 and layer4).
_DILATE = (False, True, True)


class DilatedResNet(nn.Module):
    """ResNet50/101 to ``layer4`` at output stride 8, keyed as torchvision's (no ``fc``)."""

    def __init__(self, blocks: tuple[int, int, int, int], in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        c_in, dilation = 64, 1
        for index, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            stride = 1 if index == 0 else 2
            dilate = index > 0 and _DILATE[index - 1]
            stage, dilation = bottleneck_stage(c_in, planes, n, stride, dilation, dilate)
            setattr(self, f"layer{index + 1}", stage)
            c_in = planes * Bottleneck.expansion
        for m in self.modules():  # torchvision's initialisation, for models trained from here
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``layer3`` and ``layer4`` maps (both at stride 8)."""
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
    """torchvision's FCN-ResNet50/101: ``model(x)`` is N×classes×H×W logits at the input's size.

    ``model(x, aux=True)`` returns ``{"out": ..., "aux": ...}`` as torchvision's model does
    (a model built with ``aux=False`` has no aux head and refuses that).
    """

    def __init__(self, arch: str = "fcn_resnet50", num_classes: int = 21,
                 aux: bool = True) -> None:
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ModelFormatError(f"unknown torchvision FCN {arch!r}; choose one of "
                                   f"{', '.join(ARCHITECTURES)}")
        self.arch, self.num_classes = arch, num_classes
        self.backbone = DilatedResNet(ARCHITECTURES[arch])
        self.classifier = FCNHead(2048, num_classes)
        self.aux_classifier = FCNHead(1024, num_classes) if aux else None

    def forward(self, x: torch.Tensor, aux: bool = False
                ) -> torch.Tensor | dict[str, torch.Tensor]:
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


def fcn_resnet50(num_classes: int = 21, aux: bool = True) -> TorchvisionFCN:
    """torchvision's ``fcn_resnet50`` (randomly initialised; load a state dict into it)."""
    return TorchvisionFCN("fcn_resnet50", num_classes, aux)


def fcn_resnet101(num_classes: int = 21, aux: bool = True) -> TorchvisionFCN:
    """torchvision's ``fcn_resnet101`` (randomly initialised; load a state dict into it)."""
    return TorchvisionFCN("fcn_resnet101", num_classes, aux)


def from_state_dict(state: Mapping[str, torch.Tensor]) -> TorchvisionFCN:
    """The torchvision FCN a state dict in torchvision's layout describes, with it loaded.

    The architecture is read from the deepest ``layer3`` block, the classes from
    ``classifier.4.weight``, the aux head from its keys; the load is strict, and a file that
    does not fit raises one ModelFormatError naming what was expected and what was found.
    """
    if "classifier.4.weight" not in state or "backbone.conv1.weight" not in state:
        raise ModelFormatError("not a torchvision FCN state dict: expected backbone.conv1.weight "
                               "and classifier.4.weight, found neither or one")
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("backbone.layer3."))
    arch = next((a for a, b in ARCHITECTURES.items() if b[2] == depth), None)
    if arch is None:
        raise ModelFormatError(f"a torchvision FCN with {depth} layer3 blocks; expected 6 "
                               f"(fcn_resnet50) or 23 (fcn_resnet101)")
    model = TorchvisionFCN(arch, int(state["classifier.4.weight"].shape[0]),
                           aux=any(k.startswith("aux_classifier.") for k in state))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        raise ModelFormatError(f"{arch} state dict does not fit: missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}, mis-shaped {shapes[:3]} "
                               f"({len(missing)}/{len(unexpected)}/{len(shapes)} in all)")
    model.load_state_dict(state, strict=True)
    return model
