"""Building FCNs by name, and rebuilding them from the files they were saved to."""
from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from torch import nn

from ..config import MODEL_NAMES, ModelConfig
from ..errors import InputError, ModelFormatError
from .checkpoint import read_meta
from .pretrained_data import foreign_meta, released_meta
from .fcn import FCN
from .fusion import LateFusionFCN
from .loading import LoadReport, apply_weights
from .multihead import MultiHeadFCN
from .registry import MODEL_LAYOUTS, architectures, backbones, find_architecture, get_backbone
from .weights import read_weights

_OPTIONS = tuple(f.name for f in fields(ModelConfig)
                 if f.name not in ("name", "num_classes", "backbone", "layout"))


def create_model(name: str = "fcn8s", num_classes: int = 21, backbone: str = "vgg16",
                 layout: str = "edge", weights: str | Path | None = None,
                 **options: Any) -> FCN:
    """Build an FCN (paper §4): ``fcn32s``, ``fcn16s`` or ``fcn8s`` on a backbone.

    Args:
        name: the variant: output stride of the finest skip (32, 16, 8).
        num_classes: class score channels (21 for PASCAL VOC).
        backbone: a registered backbone (``registry.py``): ``vgg16`` (the paper's best),
            ``alexnet``, ``googlenet`` (paper Table 1), ``resnet18`` (the edge default) or
            ``mobilenet_v3_large``/``mobilenet_v3_small`` (real time on a CPU).
        layout: ``edge`` or ``reference`` (VGG16 only; the released Caffe nets).
        weights: a local file: an fcn-edge checkpoint, an FCN state dict (ours or the released
            nets converted to PyTorch), a torchvision classifier (ImageNet initialisation), or a
            coarser FCN for staged training. Never downloaded, never unpickled as code.
        heads: instead of ``num_classes``, task → classes (``{"semantic": 33, "geometric":
            3}``): a :class:`MultiHeadFCN` with one head per task on one trunk (paper §5).
        **options: ``learnable_upsampling``, ``fc_channels``, ``dropout``, ``in_channels``,
            ``inputs`` (``{"rgb": 3, "depth": 1}`` or pairs) and ``fusion`` (``early`` or
            ``late``: a :class:`LateFusionFCN`, one stream per input, paper §5).

    Returns:
        The model; ``model.config`` holds its configuration and, when ``weights`` was given,
        ``model.load_report`` says what was loaded.
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise InputError(f"unknown model option(s) {unknown}; valid: {', '.join(_OPTIONS)}")
    for key in ("heads", "inputs"):
        if isinstance(options.get(key), dict):
            options[key] = tuple(options[key].items())
    config = ModelConfig(name=name, num_classes=num_classes, backbone=backbone, layout=layout,
                         **options)
    model = build(config)
    if weights is not None:
        model.load_report = apply_weights(model, read_weights(weights))
    return model


def build(config: ModelConfig) -> FCN:
    """The (randomly initialised) FCN described by ``config``: a MultiHeadFCN with heads, a
    LateFusionFCN (one stream per input, named after it) with ``fusion="late"``."""
    architecture = find_architecture(config.name)
    if architecture is not None:  # torchvision's / jetson-inference's FCNs
        return architecture.build_model(config)
    if config.heads:
        return MultiHeadFCN(build, config)
    if config.fusion == "late":
        streams = [build(replace(config, inputs=(pair,), in_channels=pair[1], fusion="early"))
                   for pair in config.inputs]
        return LateFusionFCN(streams, config.input_names, config=config)
    return get_backbone(config.backbone).build_fcn(config)


def load_model(path: str | Path, **overrides: Any) -> FCN:
    """Rebuild the model saved in ``path`` and load its weights.

    For an fcn-edge checkpoint the configuration comes from the file and ``model.meta`` holds
    its metadata (a ``CheckpointMeta``: class names, palette, normalisation …). For a bare FCN
    state dict (e.g. the released nets) the variant, backbone, classes, fc width and input
    channels are read from the tensors, and the released Caffe nets (C×C×k×k upsampling
    kernels) get the ``reference`` layout and Caffe's BGR mean pixel. A published
    architecture's state dict (torchvision's fcn_resnet50, a jetson-inference trainer's
    checkpoint …) rebuilds that architecture; the classes of a pytorch-segmentation checkpoint
    come from the data set it names. ``overrides`` replace configuration fields.
    """
    weights = read_weights(path)
    if weights.kind == "torchvision":
        raise ModelFormatError(f"{path} is an ImageNet classifier, not a segmentation model; use "
                               f"create_model(..., backbone='{weights.backbone}', weights=...) "
                               f"to initialise an FCN from it")
    released = weights.kind == "fcn" and _released_layout(weights)
    if weights.kind == "checkpoint":
        config = dict(weights.checkpoint["model_config"])
    elif weights.kind == "architecture":
        config = {"name": weights.variant, "aux": weights.has_aux,
                  "num_classes": int(weights.state_dict["classifier.4.weight"].shape[0])}
    else:
        config = {"name": weights.variant, "backbone": weights.backbone,
                  "num_classes": int(weights.state_dict["score_fr.weight"].shape[0])}
        if "fc6.weight" in weights.state_dict:
            config["fc_channels"] = int(weights.state_dict["fc6.weight"].shape[0])
        first = weights.state_dict.get(get_backbone(weights.backbone).first_conv)
        if first is not None:
            config["in_channels"] = int(first.shape[1])
        if released:
            config["layout"] = "reference"
    if "in_channels" in overrides and "inputs" not in overrides:
        config.pop("inputs", None)  # the inputs follow the new channel count
    config.update(overrides)
    model = build(ModelConfig.from_dict(config))
    model.load_report = apply_weights(model, weights)
    # The one place a checkpoint's meta is parsed; a foreign file's is what it implies.
    if released:
        model.meta = released_meta(model.config.num_classes)
    elif weights.foreign:
        model.meta = foreign_meta(weights.foreign)
    else:
        model.meta = read_meta(weights)
    return model


def _released_layout(weights) -> bool:
    """Whether a bare FCN state dict is one of the released Caffe nets (converted to PyTorch,
    e.g. by pytorch-fcn): they alone store an upsampling as a C×C×k×k kernel (bilinear on the
    diagonal); fcn-edge writes C×1×k×k. Their layout is ``reference`` (pad 100, Caffe's
    crops)."""
    return any(k.startswith("upscore") and v.ndim == 4 and v.shape[0] == v.shape[1] > 1
               for k, v in weights.state_dict.items())


def list_models() -> list[dict[str, Any]]:
    """Every buildable (name, backbone, layout) with its output stride: each registered
    backbone in each variant and each layout it comes in, then each published architecture
    (torchvision's and jetson-inference's FCNs, ``registry.ArchitectureSpec``)."""
    ours = [{"name": n, "backbone": b.name, "layout": lay, "output_stride": int(n[3:-1])}
            for b in backbones() for n in MODEL_NAMES for lay in MODEL_LAYOUTS
            if lay in b.layouts]
    published = [{"name": a.name, "backbone": a.backbone, "layout": "edge",
                  "output_stride": a.output_stride} for a in architectures()]
    return ours + published


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (fixed bilinear upsampling included unless trainable_only)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["create_model", "build", "load_model", "list_models", "count_parameters",
           "LoadReport"]
