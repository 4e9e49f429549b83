"""The FCN model family (paper §3–4): FCN-32s/16s/8s on VGG16, AlexNet and ResNet18.

>>> from fcn_edge.models import create_model
>>> model = create_model("fcn8s", num_classes=21, backbone="resnet18")
"""
from __future__ import annotations

from ._builder import build, count_parameters, create_model, list_models, load_model
from .alexnet import AlexNet, FCNAlexNet
from .checkpoint import save_checkpoint
from .fcn import FCN
from .fusion import LateFusionFCN
from .multihead import MultiHeadFCN
from .loading import LoadReport, reference_state_dict
from .resnet import FCNResNet18, ResNet18
from .shift_stitch import shift_and_stitch
from .upsample import bilinear_kernel
from .vgg import FCNVGG16, VGG16
from .weights import read_weights

__all__ = [
    "FCN", "LateFusionFCN", "MultiHeadFCN", "FCNVGG16", "FCNAlexNet", "FCNResNet18", "VGG16", "AlexNet", "ResNet18",
    "create_model", "build", "load_model", "list_models", "count_parameters",
    "save_checkpoint", "read_weights", "LoadReport", "reference_state_dict", "shift_and_stitch", "bilinear_kernel",
]
