"""VGG16 (Simonyan & Zisserman) and FCN-VGG16, the paper's best net (§4.1, Table 1).

``VGG16`` is the ImageNet classifier with torchvision's key names (``features.0`` …
``classifier.6``), so torchvision checkpoints load into it. ``FCNVGG16`` is the same net made
fully convolutional (§3.1): fc6 becomes a 7×7 convolution and fc7 a 1×1 convolution with 4096
channels, the last classifier layer is discarded and replaced by 1×1 class scores.

Layouts:
* ``reference`` — the released Caffe FCN-VGG16 nets: conv1_1 pads the input by 100 pixels so
  that fc6 (unpadded 7×7) sees any input, pooling rounds up (Caffe), crops align the maps.
* ``edge`` — conv1_1 pads by 1 like every other 3×3 conv and fc6 pads by 3: no 100-pixel border
  to compute (see BENCHMARKS.md for the saving), every map is ⌈H/s⌉ cells, nothing to crop but
  the last row of each upsampling. The parameters are identical, so the same weights load.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fcn import FCN

#: (channels, convolutions) of the five blocks; each block ends with 2×2 max pooling.
BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
REFERENCE_PAD = 100


def _conv_names() -> list[str]:
    return [f"conv{b}_{i}" for b, (_, n) in enumerate(BLOCKS, 1) for i in range(1, n + 1)]


def torchvision_renames() -> dict[str, str]:
    """``features.0`` → ``conv1_1``, ``features.2`` → ``conv1_2``, …: each conv of torchvision's
    ``features`` under its paper name (the backbone registry's key map for VGG16)."""
    index, mapping = 0, {}
    for b, (_, n) in enumerate(BLOCKS, 1):
        for i in range(1, n + 1):
            mapping[f"features.{index}"] = f"conv{b}_{i}"
            index += 2  # conv, ReLU
        index += 1  # pool
    return mapping


class VGG16(nn.Module):
    """The VGG16 ImageNet classifier (configuration D) with torchvision's key names."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for width, n in BLOCKS:
            for _ in range(n):
                layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU(inplace=True)]
                c_in = width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


class FCNVGG16(FCN):
    """FCN-32s/16s/8s on VGG16, with the reference nets' layer names."""

    def _build_trunk(self) -> dict[int, int]:
        cfg = self.config
        reference = cfg.layout == "reference"
        c_in = cfg.in_channels
        for b, (width, n) in enumerate(BLOCKS, 1):
            for i in range(1, n + 1):
                pad = REFERENCE_PAD if (reference and (b, i) == (1, 1)) else 1
                setattr(self, f"conv{b}_{i}", nn.Conv2d(c_in, width, 3, padding=pad))
                c_in = width
            # Rounding up (Caffe's pooling) keeps every cell of an odd-sized map.
            setattr(self, f"pool{b}", nn.MaxPool2d(2, 2, ceil_mode=True))
        self.fc6 = nn.Conv2d(512, cfg.fc_channels, 7, padding=0 if reference else 3)
        self.drop6 = nn.Dropout(cfg.dropout)
        self.fc7 = nn.Conv2d(cfg.fc_channels, cfg.fc_channels, 1)
        self.drop7 = nn.Dropout(cfg.dropout)
        return {8: 256, 16: 512, 32: cfg.fc_channels}

    def _trunk(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        taps = {}
        for b, (_, n) in enumerate(BLOCKS, 1):
            for i in range(1, n + 1):
                x = F.relu(getattr(self, f"conv{b}_{i}")(x), inplace=True)
            x = getattr(self, f"pool{b}")(x)
            if b in (3, 4):
                taps[2 ** b] = x  # pool3 (stride 8), pool4 (stride 16)
        x = self.drop6(F.relu(self.fc6(x), inplace=True))
        taps[32] = self.drop7(F.relu(self.fc7(x), inplace=True))
        return taps

    def _tap_layers(self) -> dict[int, list[nn.Module]]:
        layers: list[nn.Module] = []
        taps = {}
        for b, (_, n) in enumerate(BLOCKS, 1):
            layers += [getattr(self, f"conv{b}_{i}") for i in range(1, n + 1)]
            layers.append(getattr(self, f"pool{b}"))
            if b in (3, 4):
                taps[2 ** b] = list(layers)
        taps[32] = layers + [self.fc6, self.fc7]
        return taps
