"""Frozen configuration dataclasses shared by models, training, export and the runtime.

A config is plain data (str/int/float/bool/tuple): it round-trips through JSON, so checkpoints
and exported artifacts carry it and can rebuild exactly the model they came from.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from .errors import InputError

MODEL_NAMES = ("fcn32s", "fcn16s", "fcn8s")
BACKBONES = ("vgg16", "alexnet", "resnet18")
LAYOUTS = ("edge", "reference")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild an FCN.

    Attributes:
        name: ``fcn32s``, ``fcn16s`` or ``fcn8s`` — the output stride of the finest skip (§4.2).
        num_classes: number of score channels (21 for PASCAL VOC: 20 classes + background).
        backbone: the classifier made fully convolutional (§3.1, §4.1).
        layout: ``edge`` (no 100-pixel input padding; cheaper, export-friendly) or ``reference``
            (layer-for-layer the released Caffe FCN-VGG16 nets, VGG16 only).
        learnable_upsampling: train the bilinear deconvolutions (the reference keeps them fixed).
        fc_channels: width of fc6/fc7 (4096 in the paper; VGG16 and AlexNet only).
        dropout: dropout probability after fc6/fc7 in training (0.5 in the paper).
        in_channels: input channels (3 for RGB).
    """

    name: str = "fcn8s"
    num_classes: int = 21
    backbone: str = "vgg16"
    layout: str = "edge"
    learnable_upsampling: bool = False
    fc_channels: int = 4096
    dropout: float = 0.5
    in_channels: int = 3

    def __post_init__(self) -> None:
        _check_choice("model name", self.name, MODEL_NAMES)
        _check_choice("backbone", self.backbone, BACKBONES)
        _check_choice("layout", self.layout, LAYOUTS)
        if self.layout == "reference" and self.backbone != "vgg16":
            raise InputError(f"layout 'reference' exists only for vgg16 (the released FCN-VGG16 "
                             f"nets); use layout='edge' with backbone '{self.backbone}'")
        for field, low in (("num_classes", 1), ("fc_channels", 1), ("in_channels", 1)):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InputError(f"{field} must be an integer ≥ {low}, got {value!r}")
        if self.backbone == "resnet18" and self.fc_channels != 4096:
            raise InputError("fc_channels sets the width of fc6/fc7, which resnet18 does not "
                             "have; leave it at its default for resnet18")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def output_stride(self) -> int:
        """The stride of the finest prediction before the final upsampling (32, 16 or 8)."""
        return int(self.name[3:-1])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        """Rebuild from ``to_dict`` output; unknown keys are an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown model config keys {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


def _check_choice(what: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
