"""Reading weights files safely and recognising what they hold.

Only local files are read (nothing is downloaded at run time) and never through pickle's code
execution: ``torch.load(weights_only=True)`` or safetensors. A file is one of:

* an fcn-edge checkpoint (a dict with ``format`` = ``CHECKPOINT_FORMAT``, a model config and
  a state dict);
* an FCN state dict: ours or the released FCN-VGG16 nets converted to PyTorch (``conv1_1`` …
  ``score_fr``, ``upscore*``);
* a torchvision ImageNet classifier state dict of a registered backbone (vgg16, alexnet,
  resnet18, mobilenet_v3_large/small, googlenet; ``registry.py`` holds the keys that
  recognise each);
* a published segmentation architecture's state dict (``torchvision_fcn.py``: torchvision's
  fcn_resnet50/101, jetson-inference's fcn_resnet18/34), bare or in the checkpoint dict
  dusty-nv/pytorch-segmentation's ``train.py`` writes (``{"model", "arch", "dataset", …}``).

This module only reads and classifies; ``loading.py`` applies a file to a model.
"""
from __future__ import annotations

import argparse
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import ModelFormatError
from ..runtime.engine_file import MAGIC as ENGINE_MAGIC
from .registry import architecture_names, backbone_names, backbones, find_architecture
from .torchvision_fcn import detect as detect_architecture

CHECKPOINT_FORMAT = "fcn-edge/checkpoint"
#: Bumped when the checkpoint layout changes incompatibly; readers refuse other versions.
CHECKPOINT_VERSION = 1
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
#: The plain entries of a pytorch-segmentation checkpoint kept beside its weights.
_FOREIGN_KEYS = ("arch", "dataset", "num_classes", "resolution", "mean_IoU", "accuracy", "epoch")


@dataclass(frozen=True)
class WeightsFile:
    """The tensors of a weights file and what kind of file it is.

    ``kind`` is ``"checkpoint"``, ``"fcn"``, ``"torchvision"`` or ``"architecture"`` (a
    published segmentation architecture); ``backbone`` the trunk it holds; ``variant`` the FCN
    variant (``fcn32s``/``fcn16s``/``fcn8s``) or the architecture (``fcn_resnet50``).
    ``foreign`` holds a pytorch-segmentation checkpoint's plain entries (``arch``, ``dataset``,
    ``num_classes``, ``resolution``, ``mean_IoU`` …), None for other files.
    """

    path: Path
    state_dict: dict[str, torch.Tensor]
    kind: str
    backbone: str
    variant: str | None = None
    checkpoint: dict[str, Any] | None = None
    foreign: dict[str, Any] | None = None

    @property
    def has_aux(self) -> bool:
        """Whether a published architecture's file holds its auxiliary head."""
        return any(k.startswith("aux_classifier.") for k in self.state_dict)


def read_weights(path: str | Path) -> WeightsFile:
    """Read and classify a local weights file; a clear ModelFormatError on anything else."""
    path = Path(path)
    if path.is_dir():
        raise ModelFormatError(f"weights path {path} is a directory; pass the weights file in it")
    if not path.is_file():
        raise ModelFormatError(f"weights file {path} does not exist (weights are read from local "
                               f"files only; nothing is downloaded)")
    _refuse_exported(path)
    obj = _load_safetensors(path) if path.suffix == ".safetensors" else _load_torch(path)
    checkpoint = obj if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT else None
    version = (checkpoint or {}).get("version", CHECKPOINT_VERSION)
    if version != CHECKPOINT_VERSION:
        raise ModelFormatError(
            f"{path} is an fcn-edge checkpoint of format version {version!r} "
            f"(written by fcn-edge {checkpoint.get('fcn_edge_version', '?')}); this fcn-edge "
            f"reads version {CHECKPOINT_VERSION}: use the fcn-edge that wrote it, or retrain")
    state = _unwrap(obj, path)
    kind, backbone, variant = _classify(state, path)
    if checkpoint is not None:
        kind = "checkpoint"
    foreign = None
    if checkpoint is None and isinstance(obj, dict) and isinstance(obj.get("arch"), str):
        foreign = {k: obj[k] for k in _FOREIGN_KEYS if k in obj}
        if foreign["arch"] != variant:
            raise ModelFormatError(f"{path} says its arch is {foreign['arch']!r} but its "
                                   f"weights are a {variant}; the file is inconsistent")
    return WeightsFile(path, state, kind, backbone, variant, checkpoint, foreign)


def _refuse_exported(path: Path) -> None:
    """An exported model is not a checkpoint: say so, rather than torch.load's words about
    pickles. Known by its suffix, the fcn-edge engine magic, or an ONNX protobuf's first bytes
    (field 1, ir_version 3 … 12; a torch file starts with a zip's ``PK`` or a pickle's 0x80)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(ENGINE_MAGIC))
    except OSError:
        return  # the loader says why it cannot be read
    onnx = path.suffix.lower() == ".onnx" or (len(head) > 1 and head[0] == 0x08
                                                and 3 <= head[1] <= 12)
    engine = path.suffix.lower() in (".engine", ".plan") or head == ENGINE_MAGIC
    if onnx or engine:
        what = "an ONNX model" if onnx and not engine else "a TensorRT engine"
        raise ModelFormatError(f"{path} is an exported model ({what}), not a training "
                               f"checkpoint: pass the checkpoint it was exported from (the .pt "
                               f"fcn-edge train wrote, e.g. runs/train/best.pt)")


def _load_torch(path: Path) -> Any:
    # pytorch-segmentation's checkpoints hold their argparse.Namespace: it only sets
    # attributes when unpickled (no code runs), so it is allowed beside the weights-only types.
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            raise ModelFormatError(
                f"{path} holds pickled Python objects that fcn-edge will not execute "
                f"(weights_only=True): re-save it as a plain state dict "
                f"(torch.save(model.state_dict(), path)) or as .safetensors ({_first_line(exc)})"
            ) from None
        raise _unreadable(path, exc) from None
    except Exception as exc:  # the unpickler raises KeyError, IndexError … on garbage
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: BaseException) -> ModelFormatError:
    return ModelFormatError(f"{path} is not a readable PyTorch weights file; it may be "
                            f"truncated or corrupt ({type(exc).__name__}: {_first_line(exc)})")


def _load_safetensors(path: Path) -> Any:
    try:
        from safetensors import safe_open
    except ImportError:
        raise ModelFormatError(f"reading {path} needs safetensors: pip install safetensors") from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own SafetensorError and OSError
        raise ModelFormatError(f"{path} is not a readable safetensors file; it may be truncated "
                               f"or corrupt ({_first_line(exc)})") from None
    if meta.get("format") == CHECKPOINT_FORMAT:
        header = json.loads(meta.get("fcn_edge", "{}"))
        return {**header, "format": CHECKPOINT_FORMAT, "state_dict": state}
    return state


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside ``obj``: bare, or under a common wrapper key; DDP prefix removed."""
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ModelFormatError(f"{path} holds no state dict (found {type(obj).__name__})")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ModelFormatError(f"{path} holds no tensors; expected a state dict")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _classify(state: Mapping[str, torch.Tensor], path: Path) -> tuple[str, str, str | None]:
    if "fcn.score_fr.weight" in state:  # a MultiHeadFCN: its trunk and first head say it all
        inner = {k[len("fcn."):]: v for k, v in state.items() if k.startswith("fcn.")}
        return _classify(inner, path)
    stream = next((k[:-len("score_fr.weight")] for k in state
                   if k.startswith("streams.") and k.endswith(".score_fr.weight")), None)
    if stream:  # a LateFusionFCN: its first stream says it all (every stream is alike)
        return _classify({k[len(stream):]: v for k, v in state.items()
                          if k.startswith(stream)}, path)
    if "score_fr.weight" in state:
        # Each backbone's record names a key that recognises its trunk (registry.py).
        backbone = next((b.name for b in backbones() if b.fcn_sign in state), None)
        if backbone is None:
            raise ModelFormatError(f"{path} has FCN score layers but no known trunk "
                                   f"(expected keys like conv5_3.weight or layer4.1.conv2.weight)")
        variant = ("fcn8s" if "score_pool3.weight" in state
                   else "fcn16s" if "score_pool4.weight" in state else "fcn32s")
        return "fcn", backbone, variant
    for spec in backbones():
        if all(k in state for k in spec.torchvision_signs):
            return "torchvision", spec.name, None
    try:  # torchvision's / jetson-inference's segmentation FCNs
        found = detect_architecture(state)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc}") from None
    if found is not None:
        return "architecture", find_architecture(found[0]).backbone, found[0]
    sample = ", ".join(list(state)[:5])
    raise ModelFormatError(
        f"{path} is neither an fcn-edge checkpoint, an FCN state dict, a torchvision "
        f"{'/'.join(backbone_names())} classifier nor a {'/'.join(architecture_names())} "
        f"segmentation model (first keys: {sample})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
