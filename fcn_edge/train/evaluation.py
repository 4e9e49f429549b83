"""Evaluation with the paper's metrics (§5), shared by validation and ``fcn-edge eval``."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..data import normalize, open_dataset, write_palette_png
from ..errors import InputError
from ..metrics import ConfusionMatrix
from ..models import load_model
from .distributed import Context, sum_across_ranks


@torch.no_grad()
def predict(model: nn.Module, image: np.ndarray, mean, std, device: torch.device,
            amp: bool = False) -> np.ndarray:
    """H×W×3 uint8 RGB image → H×W uint8 label map (argmax of the class scores)."""
    x = torch.from_numpy(normalize(image, mean, std))[None].to(device)
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
        logits = model(x)
    return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()


def evaluate(model: nn.Module, dataset, mean: Sequence[float], std: Sequence[float],
             device: torch.device, ctx: Context | None = None, amp: bool = False,
             predictions_dir: str | Path | None = None) -> ConfusionMatrix:
    """Confusion matrix of ``model`` over ``dataset`` (whole images, one at a time).

    Under DDP each rank evaluates every ``world``-th image and the matrices are summed, so
    every rank returns the metrics of the whole set. ``predictions_dir`` receives each
    prediction as a palette PNG named after its sample.
    """
    ctx = ctx or Context(device=device)
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(dataset.num_classes, dataset.ignore_index)
    for index in range(ctx.rank, len(dataset), ctx.world):
        sample = dataset[index]
        labels = predict(model, sample.image, mean, std, device, amp)
        cm.update(labels, sample.mask)
        if predictions_dir is not None:
            write_palette_png(Path(predictions_dir) / f"{sample.name}.png", labels,
                              dataset.palette)
    model.train(was_training)
    cm.matrix = sum_across_ranks(cm.matrix, ctx)
    return cm


def evaluate_checkpoint(path: str | Path, data: str = "synthetic", layout: str | None = None,
                        split: str = "val", device: str = "auto",
                        predictions_dir: str | Path | None = None, num_images: int = 100,
                        image_size: tuple[int, int] | None = None, seed: int = 0,
                        difficulty: str | None = None):
    """Load a checkpoint, open the data and score it; returns (metrics, class names).

    For ``data="synthetic"`` the validation scenes are regenerated from ``seed``: the same
    scenes the training run validated on when the seed and sizes match. ``difficulty=None``
    takes the one the checkpoint was trained on; ``image_size=None`` its training size (256×256
    when the checkpoint does not record one).
    """

    model = load_model(path)
    meta = getattr(model, "meta", {}) or {}
    trained_on = (meta.get("dataset") or {}).get("difficulty", "standard")
    if image_size is None:
        image_size = tuple((meta.get("dataset") or {}).get("image_size") or (256, 256))
    options = {"num_images": num_images, "size": image_size, "seed": seed,
               "difficulty": difficulty or trained_on} if data == "synthetic" else {}
    dataset = open_dataset(data, split, layout, **options)
    if dataset.num_classes != model.config.num_classes:
        raise InputError(f"{path} predicts {model.config.num_classes} classes but the data has "
                         f"{dataset.num_classes} ({', '.join(dataset.classes[:5])}, …)")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    model.to(dev)
    mean = meta.get("mean", (0.485, 0.456, 0.406))
    std = meta.get("std", (0.229, 0.224, 0.225))
    cm = evaluate(model, dataset, mean, std, dev, predictions_dir=predictions_dir)
    return cm.compute(), list(meta.get("classes") or dataset.classes)
