"""MobileNetV3-Large and -Small (Howard et al. 2019) and their FCNs: the trunks for real time on
a CPU, where the cost is FLOPs (depthwise convolutions, 0.22 / 0.06 GFLOPs at 224×224).

``MobileNetV3`` is the ImageNet classifier with torchvision's module layout and key names, so
torchvision's weights initialise it and its FCNs: ``features.0`` the 3×3 stride-2 stem,
``features.1`` … one inverted residual per row of the architecture table (``block.K``: the 1×1
expansion, left out where it would not widen; the depthwise convolution; squeeze-excitation
``fc1``/``fc2``; the 1×1 projection), then the 1×1 convolution to 6× the last width
(``features.16`` Large, ``features.12`` Small), global pooling and ``classifier`` = Linear,
Hardswish, Dropout, Linear.

The FCNs keep ``features`` and convolutionalise the classifier (§3.1): its hidden Linear becomes
the 1×1 convolution ``conv_head`` (timm's name for this layer), with its Hardswish and dropout;
its last Linear is decapitated, or becomes ``score_fr`` when the class counts match. Its width is
torchvision's (1280 / 1024), not ``fc_channels``, so the trunk loads torchvision's weights as
they are; its dropout is torchvision's 0.2 (``ModelConfig.dropout`` is fc6/fc7's).

Skip taps follow the paper's reasoning for pool3/pool4 (§4.2): at each stride the LAST, deepest
map before the next downsampling, i.e. the block just before the next stride-2 block — stride 8:
``features.6`` (Large, 40 channels) / ``features.3`` (Small, 24); stride 16: ``features.12``
(112) / ``features.8`` (48); stride 32: ``conv_head`` (1280 / 1024), as fc7 is VGG16's.
``tap_indices`` derives them from the table. Every convolution pads by half its kernel, so
each map is ⌈H/s⌉ cells and any input size works as it is.

Read (not copied) from pytorch/vision: torchvision/models/mobilenetv3.py @ 2f7f558158c8
(tables, InvertedResidual, classifier, init; ``num_params`` 5,483,032 / 2,542,856, which the
tests check), torchvision/models/_utils.py @ 01fdb48883a5 (``_make_divisible``). The misc.py
named for the ops (@ 4f2b2db10c6f) predates Conv2dNormActivation and SqueezeExcitation; their
layout is from torchvision's documentation of ``torchvision.ops.Conv2dNormActivation`` (conv,
norm, activation as ``0``/``1``/``2``; padding (k−1)//2; a bias only without a norm) and
``torchvision.ops.SqueezeExcitation`` (``avgpool``, ``fc1``, ``activation``, ``fc2``,
``scale_activation``), and pytorch/vision PR 5012 (the bias rule).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .fcn import FCN

#: torchvision's classifier dropout (its MobileNetV3 ``dropout`` default).
DROPOUT = 0.2


@dataclass(frozen=True)
class Bneck:
    """One inverted residual block: a row of the paper's Tables 1 and 2."""

    c_in: int
    kernel: int
    expanded: int
    c_out: int
    se: bool
    hardswish: bool  # else ReLU
    stride: int


@dataclass(frozen=True)
class Arch:
    """A MobileNetV3: its blocks and the width of the classifier's hidden layer."""

    blocks: tuple[Bneck, ...]
    last_channel: int

    @property
    def head_in(self) -> int:
        """Channels of the last 1×1 convolution (6× the last block's)."""
        return 6 * self.blocks[-1].c_out


def _rows(*rows: tuple) -> tuple[Bneck, ...]:
    return tuple(Bneck(c_in, k, exp, c_out, se, act == "HS", s)
                 for c_in, k, exp, c_out, se, act, s in rows)


ARCHS = {
    "large": Arch(_rows(
        (16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2),
        (24, 3, 72, 24, False, "RE", 1), (24, 5, 72, 40, True, "RE", 2),
        (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
        (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1),
        (80, 3, 184, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
        (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
        (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1),
        (160, 5, 960, 160, True, "HS", 1)), last_channel=1280),
    "small": Arch(_rows(
        (16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2),
        (24, 3, 88, 24, False, "RE", 1), (24, 5, 96, 40, True, "HS", 2),
        (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
        (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1),
        (48, 5, 288, 96, True, "HS", 2), (96, 5, 576, 96, True, "HS", 1),
        (96, 5, 576, 96, True, "HS", 1)), last_channel=1024),
}


def make_divisible(value: float, divisor: int = 8) -> int:
    """The nearest multiple of ``divisor`` (at least ``divisor``), never 10 % below ``value``:
    the TensorFlow reference's channel rounding, which sets the squeeze widths."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def tap_indices(arch: Arch) -> dict[int, int]:
    """``{8: i, 16: j}``: the last ``features`` index at strides 8 and 16 (pool3/pool4's place:
    the deepest map before the next downsampling). ``features.0`` (the stem) has stride 2."""
    stride, last = 2, {}
    for index, block in enumerate(arch.blocks, start=1):
        stride *= block.stride
        last[stride] = index
    return {8: last[8], 16: last[16]}


class ConvBNAct(nn.Sequential):
    """torchvision's Conv2dNormActivation as MobileNetV3 uses it: ``0`` a convolution without
    bias (the BatchNorm's shift replaces it), ``1`` BatchNorm with the TensorFlow reference's
    eps/momentum, ``2`` the activation unless None (the linear bottleneck's projection)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1,
                 groups: int = 1, activation: type[nn.Module] | None = None) -> None:
        layers = [nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups,
                            bias=False),
                  nn.BatchNorm2d(c_out, eps=0.001, momentum=0.01)]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Channel attention (Hu et al.): global average, 1×1 squeeze (ReLU), 1×1 excite, and a
    hard sigmoid (MobileNetV3's cheap gate) that scales each channel of the input."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
        return self.scale_activation(scale) * x


class InvertedResidual(nn.Module):
    """Expand (1×1), depthwise k×k (the block's only spatial layer and stride), optional
    squeeze-excitation, project (1×1, linear); the input is added back when the shape allows."""

    def __init__(self, b: Bneck) -> None:
        super().__init__()
        act = nn.Hardswish if b.hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if b.expanded != b.c_in:  # torchvision omits an expansion that would not widen
            layers.append(ConvBNAct(b.c_in, b.expanded, activation=act))
        self._depthwise_at = len(layers)
        layers.append(ConvBNAct(b.expanded, b.expanded, b.kernel, b.stride, groups=b.expanded,
                                activation=act))
        if b.se:
            layers.append(SqueezeExcitation(b.expanded, make_divisible(b.expanded // 4)))
        layers.append(ConvBNAct(b.expanded, b.c_out))
        self.block = nn.Sequential(*layers)
        self.residual = b.stride == 1 and b.c_in == b.c_out

    def depthwise(self) -> nn.Conv2d:
        """The depthwise convolution (for the geometry: 1×1 layers move no cells)."""
        return self.block[self._depthwise_at][0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.residual else out


def mobilenet_features(arch: Arch, in_channels: int = 3) -> nn.Sequential:
    """torchvision's ``features``: stem, one InvertedResidual per row, the last 1×1 conv."""
    return nn.Sequential(
        ConvBNAct(in_channels, arch.blocks[0].c_in, 3, 2, activation=nn.Hardswish),
        *(InvertedResidual(b) for b in arch.blocks),
        ConvBNAct(arch.blocks[-1].c_out, arch.head_in, activation=nn.Hardswish))


def init_like_torchvision(model: nn.Module) -> None:
    """torchvision's initialisation: He (fan-out) convolutions, unit BatchNorm, N(0, 0.01)
    Linear layers, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
        bias = getattr(m, "bias", None)
        if isinstance(bias, nn.Parameter):
            nn.init.zeros_(bias)


#: The FCN's BatchNorm momentum: PyTorch's default, not torchvision's 0.01. With 0.01 the
#: running statistics move 1 % a step, so after the few hundred steps of a short run (400
#: scenes, 4 epochs of batch 4) they are still far from the maps' own and eval mode predicted
#: background everywhere (validation mean IU 0.11 while the training loss fell to 0.26,
#: benchmarks/bench_train.py). ImageNet training runs for ~10⁶ steps; segmentation fine-tuning
#: does not. Momentum is not in the state dict: files load the same either way.
FCN_BN_MOMENTUM = 0.1


class MobileNetV3(nn.Module):
    """The MobileNetV3 ImageNet classifier (``"large"`` or ``"small"``), torchvision's keys."""

    def __init__(self, arch: str = "large", num_classes: int = 1000,
                 dropout: float = DROPOUT) -> None:
        super().__init__()
        spec = ARCHS[arch]
        self.features = mobilenet_features(spec)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(spec.head_in, spec.last_channel), nn.Hardswish(inplace=True),
            nn.Dropout(dropout, inplace=True), nn.Linear(spec.last_channel, num_classes))
        init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v3_large(num_classes: int = 1000) -> MobileNetV3:
    return MobileNetV3("large", num_classes)


def mobilenet_v3_small(num_classes: int = 1000) -> MobileNetV3:
    return MobileNetV3("small", num_classes)


class _FCNMobileNetV3(FCN):
    """FCN-32s/16s/8s on a MobileNetV3 (``arch`` set by the subclass)."""

    arch = "large"

    def _build_trunk(self) -> dict[int, int]:
        spec = ARCHS[self.arch]
        self.features = mobilenet_features(spec, self.config.in_channels)
        self.conv_head = nn.Conv2d(spec.head_in, spec.last_channel, 1)  # classifier.0 (§3.1)
        self.act_head = nn.Hardswish(inplace=True)
        self.drop_head = nn.Dropout(DROPOUT)
        init_like_torchvision(self)  # the head (score layers, upsampling) is built after this
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = FCN_BN_MOMENTUM
        self._taps = tap_indices(spec)
        widths = {s: spec.blocks[i - 1].c_out for s, i in self._taps.items()}
        return {**widths, 32: spec.last_channel}

    def _trunk(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        taps = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            for stride, at in self._taps.items():
                if index == at:
                    taps[stride] = x
        taps[32] = self.drop_head(self.act_head(self.conv_head(x)))
        return taps

    def _tap_layers(self) -> dict[int, list[nn.Module]]:
        # features.i's spatial layer: the stem's conv, then each block's depthwise conv.
        path = [self.features[0][0]] + [b.depthwise() for b in self.features[1:-1]]
        return {8: path[:self._taps[8] + 1], 16: path[:self._taps[16] + 1], 32: path}


class FCNMobileNetV3Large(_FCNMobileNetV3):
    """FCN-32s/16s/8s on MobileNetV3-Large."""

    arch = "large"


class FCNMobileNetV3Small(_FCNMobileNetV3):
    """FCN-32s/16s/8s on MobileNetV3-Small."""

    arch = "small"
