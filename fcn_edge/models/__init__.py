"""The FCN model family (paper §3–4): FCN-32s/16s/8s on the registered backbones (VGG16,
AlexNet, ResNet18, GoogLeNet, MobileNetV3-Large and -Small: ``registry.py``).

>>> from fcn_edge.models import create_model
>>> model = create_model("fcn8s", num_classes=21, backbone="resnet18")

Importing this package imports nothing (PEP 562): each name below loads its module, and torch,
on first use. That keeps ``fcn_edge.models.registry`` — which the torch-free config and CLI
read — importable without torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..io import lazy_exports

#: Public name → the submodule that defines it.
_EXPORTS = {
    "FCN": "fcn", "LateFusionFCN": "fusion", "MultiHeadFCN": "multihead",
    "FCNVGG16": "vgg", "VGG16": "vgg", "FCNAlexNet": "alexnet", "AlexNet": "alexnet",
    "FCNResNet18": "resnet", "ResNet18": "resnet", "TorchvisionFCN": "torchvision_fcn",
    "FCNMobileNetV3Large": "mobilenet", "FCNMobileNetV3Small": "mobilenet",
    "MobileNetV3": "mobilenet",
    "create_model": "_builder", "build": "_builder", "load_model": "_builder",
    "list_models": "_builder", "count_parameters": "_builder",
    "save_checkpoint": "checkpoint", "CheckpointMeta": "checkpoint", "read_weights": "weights",
    "LoadReport": "loading", "reference_state_dict": "loading",
    "shift_and_stitch": "shift_stitch", "bilinear_kernel": "upsample",
    "BackboneSpec": "registry", "register": "registry", "get_backbone": "registry",
    "backbone_names": "registry",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from ._builder import build, count_parameters, create_model, list_models, load_model
    from .alexnet import AlexNet, FCNAlexNet
    from .checkpoint import CheckpointMeta, save_checkpoint
    from .fcn import FCN
    from .fusion import LateFusionFCN
    from .loading import LoadReport, reference_state_dict
    from .mobilenet import FCNMobileNetV3Large, FCNMobileNetV3Small, MobileNetV3
    from .multihead import MultiHeadFCN
    from .registry import BackboneSpec, backbone_names, get_backbone, register
    from .resnet import FCNResNet18, ResNet18
    from .shift_stitch import shift_and_stitch
    from .torchvision_fcn import TorchvisionFCN
    from .upsample import bilinear_kernel
    from .vgg import FCNVGG16, VGG16
    from .weights import read_weights

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
