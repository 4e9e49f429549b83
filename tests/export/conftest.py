"""Checkpoints to export: a real fcn-edge checkpoint whose score layers are not at zero, so
that labels vary across the image and parity is tested on something."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fcn_edge.data import PROCEDURAL_CLASSES, voc_palette
from fcn_edge.models import create_model, save_checkpoint


def make_checkpoint(path: Path, backbone: str = "resnet18", name: str = "fcn8s",
                    image_size=(64, 64), seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = create_model(name, num_classes=len(PROCEDURAL_CLASSES), backbone=backbone)
    with torch.no_grad():
        for key, param in model.named_parameters():
            if key.startswith("score"):  # zero-initialised (§4.2): give them values
                param.normal_(0, 0.05) if param.ndim > 1 else param.zero_()
    meta = {"classes": list(PROCEDURAL_CLASSES),
            "palette": voc_palette(len(PROCEDURAL_CLASSES)).tolist(),
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "color_order": "rgb",
            "ignore_index": 255,
            "dataset": {"spec": "synthetic", "layout": "synthetic",
                        "image_size": list(image_size)},
            "metrics": {"mean_iou": 0.5, "pixel_accuracy": 0.9}}
    return save_checkpoint(model, path, meta)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")
