"""Applying a weights file to an FCN: exact loads, ImageNet initialisation, staged training.

* Same variant (our checkpoints, the released reference nets): every tensor must match.
* A coarser FCN (paper §4.2, staged training): FCN-32s → 16s → 8s copies every layer the two
  nets share; the new skip score layers stay zero-initialised and the new upsampling bilinear.
* A torchvision classifier (§4.1, "we initialize ... from classification nets"): the trunk is
  copied, fc6/fc7 are reshaped from Linear to convolution, the last classifier layer is
  discarded — unless the model has as many classes as the classifier, in which case it becomes
  ``score_fr`` and the FCN outputs the classifier's heat maps (paper Figure 2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn

from ..config import MODEL_NAMES
from ..errors import ModelFormatError, WeightsMismatchError
from .channels import adapt_first_conv
from .registry import find_architecture, get_backbone
from .torchvision_fcn import check_fits
from .weights import WeightsFile

_HEAD_PREFIXES = ("score_", "upscore")


@dataclass(frozen=True)
class LoadReport:
    """What a load did: the file's kind, the tensors copied and those left as initialised."""

    source: str
    loaded: tuple[str, ...]
    initialised: tuple[str, ...]
    adapted: tuple[str, ...] = ()  # widened to more input channels (models/channels.py)

    def summary(self) -> str:
        widened = (f", {', '.join(self.adapted)} widened to more input channels"
                   if self.adapted else "")
        return (f"{self.source}: {len(self.loaded)} tensors loaded, "
                f"{len(self.initialised)} kept at initialisation{widened}")


def apply_weights(model: nn.Module, weights: WeightsFile) -> LoadReport:
    """Load ``weights`` into ``model`` as its kind dictates; WeightsMismatchError lists the keys.

    A multi-head or late-fusion model loads a file of its own structure whole. A single-task
    file (an ImageNet classifier, an RGB FCN) initialises a multi-head model's trunk and first
    head, and every stream of a late-fusion model (paper §5: each stream starts from the same
    classifier; first convolutions are adapted to each stream's channels).
    """
    cfg = model.config
    if find_architecture(cfg.name) is not None or weights.kind == "architecture":
        return _apply_architecture(model, weights)
    own_keys = next(iter(model.state_dict()))
    if weights.kind == "torchvision" or not _same_wrapper(own_keys, weights.state_dict):
        if hasattr(model, "extra_heads"):
            return apply_weights(model.fcn, weights)
        if hasattr(model, "streams"):
            reports = [apply_weights(s, weights) for s in model.streams.values()]
            return LoadReport(f"{reports[0].source}, into each of {len(reports)} streams",
                              reports[0].loaded, reports[0].initialised, reports[0].adapted)
    if weights.backbone != cfg.backbone:
        raise ModelFormatError(f"{weights.path} holds {weights.backbone} weights but the model's "
                               f"backbone is {cfg.backbone}; pass backbone='{weights.backbone}'")
    return _apply(model, weights)


def _apply_architecture(model: nn.Module, weights: WeightsFile) -> LoadReport:
    """A published architecture loads its own layout whole (strict), nothing else."""
    cfg = model.config
    if weights.variant != cfg.name:
        raise ModelFormatError(f"{weights.path} holds {weights.variant or weights.kind} weights "
                               f"and cannot initialise a {cfg.name}: deploy the file as it is "
                               f"(fcn-edge export/run/bench take it; load_model(path) in "
                               f"Python builds what it holds)")
    check_fits(model, weights.state_dict)
    model.load_state_dict(weights.state_dict, strict=True)
    return LoadReport(f"{weights.kind} ({cfg.name})", tuple(weights.state_dict), ())


def _same_wrapper(own_key: str, state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict has the wrapper layout (``fcn.`` / ``streams.`` keys) ``own_key``
    shows, or likewise none."""
    prefix = next((p for p in ("fcn.", "streams.") if own_key.startswith(p)), "")
    return not prefix or any(k.startswith(prefix) for k in state)


def _apply(model: nn.Module, weights: WeightsFile) -> LoadReport:
    cfg = model.config
    own = model.state_dict()
    if weights.kind == "torchvision":
        state = torchvision_to_fcn(weights.state_dict, cfg.backbone, own)
        state, widened = adapt_first_conv(state, cfg.backbone, own)
        return _widened(_load_subset(model, state, f"torchvision {cfg.backbone} classifier",
                                     required=lambda k: not k.startswith(_HEAD_PREFIXES)),
                        widened, cfg.backbone)
    source_rank, target_rank = MODEL_NAMES.index(weights.variant), MODEL_NAMES.index(cfg.name)
    state, widened = adapt_first_conv(_depthwise_upscores(weights.state_dict), cfg.backbone, own)
    if source_rank == target_rank:
        return _widened(_load_exact(model, state, f"{weights.kind} ({weights.variant})"),
                        widened, cfg.backbone)
    if source_rank > target_rank:
        raise ModelFormatError(f"{weights.path} is an {weights.variant}; staged initialisation "
                               f"goes coarse to fine (fcn32s → fcn16s → fcn8s), so it cannot "
                               f"initialise an {cfg.name}. Use name='{weights.variant}'")
    # Staged: everything the coarser net has, except its final upsampling, must fit.
    state = {k: v for k, v in state.items() if not _is_final_upscore(k)}
    return _widened(_load_subset(model, state, f"staged {weights.variant} → {cfg.name}",
                                 required=lambda k: k in state), widened, cfg.backbone)


def _widened(report: LoadReport, widened: bool, backbone: str) -> LoadReport:
    if not widened:
        return report
    return LoadReport(report.source, report.loaded, report.initialised,
                      (get_backbone(backbone).first_conv,))


def torchvision_to_fcn(state: Mapping[str, torch.Tensor], backbone: str,
                       target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision classifier's tensors to FCN keys, reshaping Linear to convolution.

    The final classifier layer is kept (as ``score_fr``) only when ``target`` expects that
    shape, i.e. the FCN has the classifier's number of classes. The key map, and the parts
    of the classifier that are skipped (``torchvision_dropped``), are the backbone's
    (``registry.BackboneSpec``).
    """
    spec = get_backbone(backbone)
    renames = spec.renames()
    renamed_groups = {m.split(".")[0] for m in renames if m not in spec.torchvision_fc}
    out = {}
    for key, tensor in state.items():
        module, _, leaf = key.rpartition(".")
        new_key = f"{renames.get(module, module)}.{leaf}"
        if module.split(".")[0] in renamed_groups and module not in renames:
            continue  # a renamed group's layer without a new name holds no FCN tensor
        if key.startswith(spec.torchvision_dropped):
            continue  # a part of the classifier the FCN has no place for (GoogLeNet's aux)
        if module in spec.torchvision_fc and leaf == "weight":
            tensor = _linear_as_conv(tensor, target.get(new_key), key)
        out[new_key] = tensor
    if "score_fr.weight" in out and out["score_fr.weight"].shape != target["score_fr.weight"].shape:
        del out["score_fr.weight"], out["score_fr.bias"]  # decapitate (§3.1)
    return out


def _linear_as_conv(weight: torch.Tensor, like: torch.Tensor | None, key: str) -> torch.Tensor:
    """A Linear weight (out, in·k·k) as a conv weight (out, in, k, k): fc → conv (§3.1)."""
    if like is None or like.ndim != 4:
        return weight
    out_ch, in_ch, kh, kw = like.shape
    if weight.shape[0] == out_ch and weight.shape[1] == in_ch * kh * kw:
        return weight.reshape(out_ch, in_ch, kh, kw)
    if weight.shape[0] != out_ch:
        return weight  # e.g. a 1000-way classifier for a 21-class FCN: dropped by the caller
    raise WeightsMismatchError(f"{key} has shape {tuple(weight.shape)}, which cannot be "
                               f"reshaped to a {tuple(like.shape)} convolution",
                               mis_shaped=[key])


def _depthwise_upscores(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released nets store each upsampling as a C×C×k×k tensor, bilinear on the diagonal and
    zero elsewhere; ours is depthwise (C×1×k×k). Take the diagonal, refusing real mixing."""
    out = dict(state)
    for key, w in state.items():
        if key.startswith("upscore") and w.ndim == 4 and w.shape[1] > 1 and w.shape[0] == w.shape[1]:
            diagonal = w[torch.arange(w.shape[0]), torch.arange(w.shape[0])]
            off = w.abs().sum() - diagonal.abs().sum()
            if off > 1e-6 * max(1.0, float(diagonal.abs().sum())):
                raise WeightsMismatchError(
                    f"{key} mixes classes (non-zero off-diagonal kernels); fcn-edge upsamples "
                    f"each class on its own, as the reference nets do", mis_shaped=[key])
            out[key] = diagonal.unsqueeze(1).clone()
    return out


def reference_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict in the released nets' layout (C×C×k×k upsampling kernels)."""
    out = {}
    for key, w in model.state_dict().items():
        if key.startswith("upscore") and w.ndim == 4 and w.shape[1] == 1 and w.shape[0] > 1:
            full = w.new_zeros(w.shape[0], w.shape[0], *w.shape[2:])
            full[torch.arange(w.shape[0]), torch.arange(w.shape[0])] = w[:, 0]
            w = full
        out[key] = w
    return out


def _is_final_upscore(key: str) -> bool:
    return key.split(".")[0] in ("upscore", "upscore16", "upscore8")


def _load_exact(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> LoadReport:
    return _load_subset(model, state, source, required=lambda k: True)


def _load_subset(model: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                 required: Callable[[str], bool]) -> LoadReport:
    """Copy ``state`` into ``model``: every model key ``required`` names must be in ``state``,
    every key of ``state`` must be in the model, and every shape must match."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and required(k) and not _optional(k)]
    unexpected = [k for k in state if k not in own]
    mis_shaped = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or mis_shaped:
        shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in mis_shaped]
        raise WeightsMismatchError(_mismatch_message(source, missing, unexpected, shapes),
                                   missing, unexpected, mis_shaped)
    loaded = [k for k in state if k in own]
    with torch.no_grad():
        for k in loaded:
            own[k].copy_(state[k])
    kept = tuple(k for k in own if k not in state)
    return LoadReport(source, tuple(loaded), kept)


def _optional(key: str) -> bool:
    # Old torchvision checkpoints predate BatchNorm's step counter.
    return key.endswith("num_batches_tracked")


def _mismatch_message(source: str, missing, unexpected, mis_shaped) -> str:
    parts = [f"the weights ({source}) do not fit the model:"]
    for label, keys in (("missing", missing), ("unexpected", unexpected),
                        ("mis-shaped", mis_shaped)):
        if keys:
            shown = "; ".join(keys[:8]) + (f"; … {len(keys) - 8} more" if len(keys) > 8 else "")
            parts.append(f"{len(keys)} {label} key(s): {shown}")
    parts.append("check name, backbone, num_classes, fc_channels and in_channels against the file")
    return " ".join(parts)
