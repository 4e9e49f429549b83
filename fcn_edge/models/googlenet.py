"""GoogLeNet (Szegedy et al. 2014, Inception v1) and FCN-GoogLeNet (paper Table 1).

``GoogLeNet`` is the ImageNet classifier with torchvision's module layout and key names
(``conv1.conv`` … ``inception5b.branch4.1.bn``, ``aux1``/``aux2``, ``fc``), read from
pytorch/vision ``torchvision/models/googlenet.py`` @ 8f19c7dcb5eb239a47836416770cb36475345203,
so that torchvision's ImageNet weights (ported from TensorFlow) load as they are. Two ways in
which that layout differs from the 2014 paper are kept for its keys and shapes: a batch
normalisation after every convolution (``BasicConv2d``), and a 3×3 convolution where the
paper's Inception module has a 5×5 one (``branch3``; torchvision's known bug, issue 906).

``FCNGoogLeNet`` keeps the trunk and decapitates it (§3.1). §4.1: "for GoogLeNet, we use only
the final loss layer, and improve performance by discarding the final average pooling layer":
the auxiliary classifiers, the average pooling, the dropout and ``fc`` are gone, and
``score_fr`` scores each stride-32 cell of ``inception5b``. Its skips read the last layer at
strides 16 and 8, as pool4 and pool3 are in VGG16: ``inception4e`` and ``inception3b``.
torchvision's pools round up (``ceil_mode``); the input margin and minimum size that make the
output cover every input are derived in ``fcn.FCN``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.processing import IMAGENET_MEAN, IMAGENET_STD
from .fcn import FCN

#: Each Inception module's (input, 1×1, 3×3 reduce, 3×3, "5×5" reduce, "5×5", pool projection)
#: channels (the paper's Table 1, as torchvision has them); output = 1×1 + 3×3 + 5×5 + pool.
INCEPTIONS = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}
#: The trunk's layers in order, input to inception5b.
LAYERS = ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b",
          "maxpool3", "inception4a", "inception4b", "inception4c", "inception4d",
          "inception4e", "maxpool4", "inception5a", "inception5b")
#: The last layer at each stride (the FCN's taps) and its channels.
TAPS = {8: ("inception3b", 480), 16: ("inception4e", 832), 32: ("inception5b", 1024)}


class BasicConv2d(nn.Module):
    """Convolution without bias, batch normalisation (torchvision's eps 0.001), ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1,
                 padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """Four branches concatenated: 1×1; 1×1 → 3×3; 1×1 → 3×3 (the paper's 5×5, see above);
    3×3 max pool → 1×1. Every branch keeps the map's size and its cells' positions (stride 1,
    half-kernel padding), so a module is invisible to the geometry."""

    def __init__(self, c_in: int, c1: int, c3_reduce: int, c3: int, c5_reduce: int, c5: int,
                 pool_proj: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(c_in, c1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(c_in, c3_reduce, 1),
                                     BasicConv2d(c3_reduce, c3, 3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(c_in, c5_reduce, 1),
                                     BasicConv2d(c5_reduce, c5, 3, padding=1))
        # torchvision sets ceil_mode here too; at stride 1 it changes nothing in PyTorch (the
        # map keeps its size either way), but onnx.reference's MaxPool then adds two rows and
        # columns, which broke the fp16 export's check in fp16 arithmetic (Concat of 8 and 10).
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1),
                                     BasicConv2d(c_in, pool_proj, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([branch(x) for branch in branches], 1)


class InceptionAux(nn.Module):
    """An auxiliary classifier (training only, §"GoogLeNet" of Szegedy et al.): 4×4 average
    pooling, a 1×1 convolution to 128 channels, two Linear layers."""

    def __init__(self, c_in: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = BasicConv2d(c_in, 128, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(F.adaptive_avg_pool2d(x, (4, 4))), 1)
        x = F.dropout(F.relu(self.fc1(x), inplace=True), self.dropout, self.training)
        return self.fc2(x)


def imagenet_to_half_range(channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)``, 1×C×1×1 each, that turn the first three channels of an
    ImageNet-normalised image, ``(p − mean) / std``, into ``(p − 0.5) / 0.5``: the input
    torchvision's GoogLeNet weights were trained on (its ``transform_input``, the TensorFlow
    original's preprocessing). Any further channels (depth …) pass unchanged."""
    scale, shift = torch.ones(1, channels, 1, 1), torch.zeros(1, channels, 1, 1)
    for c, (mean, std) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD)):
        if c < channels:
            scale[0, c], shift[0, c] = std / 0.5, (mean - 0.5) / 0.5
    return scale, shift


class _Trunk(nn.Module):
    """conv1 … inception5b with torchvision's names; shared by the classifier and the FCN."""

    def _build_googlenet_trunk(self, in_channels: int, transform_input: bool) -> None:
        self.conv1 = BasicConv2d(in_channels, 64, 7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, 1)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name in LAYERS[5:]:
            if name in INCEPTIONS:
                setattr(self, name, Inception(*INCEPTIONS[name]))
            else:
                kernel = 2 if name == "maxpool4" else 3
                setattr(self, name, nn.MaxPool2d(kernel, stride=2, ceil_mode=True))
        # A fixed per-channel affine, not weights: kept out of the state dict so that
        # torchvision's files and ours hold the same keys.
        self.transform_input = transform_input
        scale, shift = imagenet_to_half_range(in_channels)
        self.register_buffer("input_scale", scale, persistent=False)
        self.register_buffer("input_shift", shift, persistent=False)

    def _googlenet_layers(self, x: torch.Tensor):
        """Yield ``(name, output)`` of each trunk layer in order."""
        if self.transform_input:
            x = x * self.input_scale + self.input_shift
        for name in LAYERS:
            x = getattr(self, name)(x)
            yield name, x


def _init_weights(model: nn.Module) -> None:
    """torchvision's initialisation: truncated normal (σ 0.01) convolutions and Linear layers;
    the batch normalisation after each convolution rescales them."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)


class GoogLeNet(_Trunk):
    """The GoogLeNet ImageNet classifier with torchvision's key names.

    As torchvision's: ``aux_logits`` adds ``aux1`` (after inception4a) and ``aux2`` (after
    inception4d), whose logits are returned, after the main ones, in training only;
    ``transform_input`` re-normalises an ImageNet-normalised input as its weights expect.
    torchvision's published file holds ``aux1``/``aux2`` (not trained).
    """

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True,
                 transform_input: bool = False, dropout: float = 0.2) -> None:
        super().__init__()
        self._build_googlenet_trunk(3, transform_input)
        self.aux_logits = aux_logits
        self.aux1 = InceptionAux(512, num_classes) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(TAPS[32][1], num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor):
        aux, heads = {}, {"inception4a": self.aux1, "inception4d": self.aux2}
        for name, out in self._googlenet_layers(x):
            if self.aux_logits and self.training and name in heads:
                aux[name] = heads[name](out)
        logits = self.fc(self.dropout(torch.flatten(self.avgpool(out), 1)))
        if self.aux_logits and self.training:
            return logits, aux["inception4d"], aux["inception4a"]  # torchvision's order
        return logits


class FCNGoogLeNet(FCN, _Trunk):
    """FCN-32s/16s/8s on GoogLeNet.

    Its input is ImageNet-normalised, as every fcn-edge model's; torchvision's transform_input
    is always applied to the first three channels, the ones whose filters an ImageNet
    classifier initialises (``channels.py`` keeps them first), so that torchvision's weights
    see what they were trained on (the same trunk features as torchvision's classifier with
    ``transform_input=True``). For a net trained from scratch it is a harmless fixed affine.
    Extra channels (depth) reach conv1 unchanged, so the widening rule's identity (a grey
    image whose extra channel carries the same grey value scores as the RGB net does) holds
    only approximately here: it assumes every channel reaches conv1 as it is.
    """

    def _build_trunk(self) -> dict[int, int]:
        self._build_googlenet_trunk(self.config.in_channels, transform_input=True)
        _init_weights(self)
        return {stride: channels for stride, (_, channels) in TAPS.items()}

    def _trunk(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        strides = {name: stride for stride, (name, _) in TAPS.items()}
        return {strides[name]: out for name, out in self._googlenet_layers(x)
                if name in strides}

    def _tap_layers(self) -> dict[int, list[nn.Module]]:
        # The stem's convolutions and the pools; the Inception modules keep every cell.
        spatial = []
        for name in LAYERS:
            layer = getattr(self, name)
            spatial.append([layer.conv] if isinstance(layer, BasicConv2d)
                           else [layer] if isinstance(layer, nn.MaxPool2d) else [])
        return {stride: [m for layers in spatial[:LAYERS.index(tap) + 1] for m in layers]
                for stride, (tap, _) in TAPS.items()}
