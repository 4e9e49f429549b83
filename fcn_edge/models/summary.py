"""Model-zoo summaries: parameters and multiply-adds, computed without allocating weights."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import ModelConfig
from ._builder import build, count_parameters, list_models


def describe(config: ModelConfig, size: tuple[int, int] = (512, 512)) -> dict[str, Any]:
    """Parameters and GFLOPs (2 × multiply-adds) of ``config`` for one ``size`` image.

    The model is built on PyTorch's ``meta`` device: shapes only, no memory, no arithmetic,
    so even FCN-VGG16 (134M parameters) is described in a fraction of a second.
    """
    with torch.device("meta"):
        model = build(config).eval()
        image = torch.empty(1, config.in_channels, *size)
        with FlopCounterMode(display=False) as counter:
            model(image)
    return {
        **config.to_dict(),
        "output_stride": config.output_stride,
        "params": count_parameters(model),
        "trainable_params": count_parameters(model, trainable_only=True),
        "gflops": counter.get_total_flops() / 1e9,
        "input_size": list(size),
        # The paper nets' 100-pixel padding plan; the published architectures pad nothing.
        "input_margin": model.plan.input_margin if hasattr(model, "plan") else 0,
    }


def describe_all(num_classes: int = 21, size: tuple[int, int] = (512, 512)) -> list[dict[str, Any]]:
    """``describe`` for every entry of ``list_models()``."""
    return [describe(ModelConfig(name=m["name"], backbone=m["backbone"], layout=m["layout"],
                                 num_classes=num_classes), size) for m in list_models()]
