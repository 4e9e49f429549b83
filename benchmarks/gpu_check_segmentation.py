"""The torchvision_parity section's second half (gpu_check_models.py): the published
segmentation FCNs fcn-edge rebuilds (``fcn_edge/models/torchvision_fcn.py``) against
torchvision's own modules under the same weights, where torchvision imports.

torchvision's ``fcn_resnet50``/``fcn_resnet101`` are its segmentation models; jetson-inference's
``fcn_resnet18``/``fcn_resnet34`` (dusty-nv/vision v0.3.0's ``_segm_resnet``) are assembled from
torchvision's pieces the way that fork does: ``IntermediateLayerGetter`` over an undilated
ResNet18/34, ``FCN`` with ``FCNHead(512)`` and an aux ``FCNHead(256)``. Each reference's state
dict goes through a file and ``fcn_edge.models.load_model``, as a user's download would, and
both models' ``out`` and ``aux`` are compared at an input size that is no multiple of 8.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from gpu_check_models import PARITY_TOLERANCE, draw_batchnorm
from gpu_check_runner import Context, attempt

#: A size that is no multiple of the output stride, so the upsampling's edges are compared too.
SIZE = (1, 3, 100, 148)


def references(models: Any) -> dict[str, Callable[[], torch.nn.Module]]:
    """Architecture → a builder of torchvision's module for it (21 classes, aux head)."""
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.fcn import FCN, FCNHead

    def fork(depth: int) -> torch.nn.Module:
        trunk = getattr(models, f"resnet{depth}")(weights=None)
        backbone = IntermediateLayerGetter(trunk, {"layer4": "out", "layer3": "aux"})
        return FCN(backbone, FCNHead(512, 21), FCNHead(256, 21))

    def torchvision(name: str) -> torch.nn.Module:
        return getattr(models.segmentation, name)(weights=None, weights_backbone=None,
                                                  num_classes=21, aux_loss=True)

    return {"fcn_resnet18": lambda: fork(18), "fcn_resnet34": lambda: fork(34),
            "fcn_resnet50": lambda: torchvision("fcn_resnet50"),
            "fcn_resnet101": lambda: torchvision("fcn_resnet101")}


def segmentation_parity(ctx: Context, models: Any, results: dict, folder: Path) -> None:
    """One result per architecture (only fcn_resnet18 with ``--quick``)."""
    builders = references(models)
    names = ("fcn_resnet18",) if ctx.quick else tuple(builders)
    for name in names:
        attempt(ctx, results, name, lambda: parity_one(builders[name](), name, folder,
                                                       ctx.device))


def parity_one(reference: torch.nn.Module, name: str, folder: Path, device: str) -> dict:
    """``reference`` (returning torchvision's ``{"out", "aux"}``) against ours loaded from its
    state dict: the architecture load_model detected, and each output's max |Δ| / max |ref|."""
    from fcn_edge.models import load_model

    draw_batchnorm(reference)
    path = folder / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    ours = load_model(path).eval().to(device)
    reference = reference.eval().to(device)
    x = torch.randn(*SIZE, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        mine, theirs = ours(x, aux=True), reference(x)
    out: dict = {"detected": ours.config.name, "input": list(SIZE)}
    for key in ("out", "aux"):
        a, b = mine[key], theirs[key]
        diff, scale = float((a - b).abs().max()), float(b.abs().max())
        rel = diff / max(scale, 1e-12)
        out[key] = {"ok": rel <= PARITY_TOLERANCE and a.shape == b.shape, "rel": rel,
                    "max_abs_diff": diff, "shape": list(b.shape)}
    bad = [k for k in ("out", "aux") if not out[k]["ok"]]
    if ours.config.name != name:
        bad.insert(0, f"detected as {ours.config.name}")
    return out | {"error": f"differs from torchvision at {', '.join(bad)}"} if bad else out
