"""AlexNet and FCN-AlexNet (paper Table 1; jetson-inference's FCN-Alexnet).

``AlexNet`` is torchvision's single-tower variant with its key names (``features.0`` …
``classifier.6``). ``FCNAlexNet`` keeps ``features`` as they are and turns the classifier into
convolutions (§3.1): fc6 a 6×6 convolution over pool5, fc7 1×1, 4096 channels each.

The paper reports only FCN-32s for AlexNet; 16s and 8s tap the first maps at strides 16 and 8
(pool2 and pool1), the positions pool4 and pool3 hold in VGG16. Pooling rounds up so that odd
sizes keep their last cells; conv1 (11×11, stride 4, pad 2) needs at least 7 pixels, and the
bottom/right input margin that covers every size is derived in ``fcn.FCN``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fcn import FCN

#: Indices of the three max-pooling layers in ``features``.
POOLS = (2, 5, 12)


def alexnet_features(in_channels: int = 3, ceil_mode: bool = False) -> nn.Sequential:
    """torchvision's AlexNet ``features`` (conv1…pool5); ``ceil_mode`` for the FCN."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=ceil_mode),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=ceil_mode),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=ceil_mode),
    )


class AlexNet(nn.Module):
    """The AlexNet ImageNet classifier with torchvision's key names."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = alexnet_features()
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


class FCNAlexNet(FCN):
    """FCN-32s/16s/8s on AlexNet."""

    def _build_trunk(self) -> dict[int, int]:
        cfg = self.config
        self.features = alexnet_features(cfg.in_channels, ceil_mode=True)
        # A 6×6 kernel has no centre pixel: padding 3 adds one cell and shifts the map by half a
        # cell, which the derived upsampling absorbs (even kernel, see geometry.plan_upsampling).
        self.fc6 = nn.Conv2d(256, cfg.fc_channels, 6, padding=3)
        self.drop6 = nn.Dropout(cfg.dropout)
        self.fc7 = nn.Conv2d(cfg.fc_channels, cfg.fc_channels, 1)
        self.drop7 = nn.Dropout(cfg.dropout)
        return {8: 64, 16: 192, 32: cfg.fc_channels}

    def _trunk(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        taps = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == POOLS[0]:
                taps[8] = x
            elif i == POOLS[1]:
                taps[16] = x
        x = self.drop6(F.relu(self.fc6(x), inplace=True))
        taps[32] = self.drop7(F.relu(self.fc7(x), inplace=True))
        return taps

    def _tap_layers(self) -> dict[int, list[nn.Module]]:
        layers = list(self.features)
        return {
            8: layers[:POOLS[0] + 1],
            16: layers[:POOLS[1] + 1],
            32: layers + [self.fc6, self.fc7],
        }
