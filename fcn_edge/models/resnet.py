"""ResNet18 (He et al.) and FCN-ResNet18, the edge default (as jetson-inference's FCN-ResNet18);
the Bottleneck block of ResNet50/101 (``torchvision_fcn.py`` builds torchvision's FCNs on it).

``ResNet18`` is the ImageNet classifier with torchvision's key names (``conv1``, ``bn1``,
``layer1.0.conv1`` … ``fc``). ``FCNResNet18`` keeps the trunk, discards the pooled classifier
(§3.1: "decapitate") and scores each stride-32 cell with a 1×1 convolution; its skips read
``layer3`` (stride 16) and ``layer2`` (stride 8). ResNet has no fc6/fc7: the trunk is already
convolutional. Every 3×3/7×7 convolution pads by half its kernel, so each map is ⌈H/s⌉ cells
and any input size works as it is.
"""
from __future__ import annotations

import torch
from torch import nn

from .fcn import FCN

WIDTHS = (64, 128, 256, 512)


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Sequential | None:
    """The 1×1 projection (torchvision's ``downsample``) where the block changes the map's
    channels or stride; None (identity) where it keeps them."""
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with an identity (or 1×1 projection) shortcut."""

    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = _shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3, 1×1 expand (×4), with torchvision's names and its v1.5 placement:
    the stride sits on the 3×3 ``conv2`` (not the 1×1 ``conv1``), as does the dilation, whose
    padding keeps the map's size."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


def bottleneck_stage(c_in: int, planes: int, blocks: int, stride: int, dilation: int,
                     dilate: bool) -> tuple[nn.Sequential, int]:
    """A stage of ``blocks`` Bottlenecks and the dilation after it. With ``dilate`` the
    stride becomes dilation (DeepLab's trick, torchvision's ``replace_stride_with_dilation``):
    the first block keeps the incoming dilation, the others use the multiplied one."""
    new_dilation = dilation * stride if dilate else dilation
    first = Bottleneck(c_in, planes, 1 if dilate else stride, dilation)
    c_out = planes * Bottleneck.expansion
    rest = [Bottleneck(c_out, planes, dilation=new_dilation) for _ in range(blocks - 1)]
    return nn.Sequential(first, *rest), new_dilation


def basic_stage(c_in: int, c_out: int, blocks: int, stride: int) -> nn.Sequential:
    """A stage of ``blocks`` BasicBlocks; the first one strides (ResNet18: 2 per stage)."""
    rest = [BasicBlock(c_out, c_out) for _ in range(blocks - 1)]
    return nn.Sequential(BasicBlock(c_in, c_out, stride), *rest)


def _stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return basic_stage(c_in, c_out, 2, stride)


class _Trunk(nn.Module):
    """conv1 … layer4 with torchvision's names; shared by the classifier and the FCN."""

    def _build_resnet18_trunk(self, in_channels: int) -> None:
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        self.layer1 = _stage(64, 64, 1)
        self.layer2 = _stage(64, 128, 2)
        self.layer3 = _stage(128, 256, 2)
        self.layer4 = _stage(256, 512, 2)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _resnet18_taps(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x8 = self.layer2(self.layer1(x))
        x16 = self.layer3(x8)
        return {8: x8, 16: x16, 32: self.layer4(x16)}


class ResNet18(_Trunk):
    """The ResNet18 ImageNet classifier with torchvision's key names."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._build_resnet18_trunk(3)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self._resnet18_taps(x)[32]), 1))


class FCNResNet18(FCN, _Trunk):
    """FCN-32s/16s/8s on ResNet18."""

    def _build_trunk(self) -> dict[int, int]:
        self._build_resnet18_trunk(self.config.in_channels)
        return {8: WIDTHS[1], 16: WIDTHS[2], 32: WIDTHS[3]}

    def _trunk(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        return self._resnet18_taps(x)

    def _tap_layers(self) -> dict[int, list[nn.Module]]:
        # The main path's strided layers; the 1×1 shortcuts share their stride and cell centres.
        stem = [self.conv1, self.maxpool]
        blocks = {n: [b.conv1 for b in getattr(self, f"layer{n}")] for n in (1, 2, 3, 4)}
        to8 = stem + blocks[1] + blocks[2]
        return {8: to8, 16: to8 + blocks[3], 32: to8 + blocks[3] + blocks[4]}
