"""fcn-edge checkpoints: weights plus everything needed to rebuild and deploy the model.

A checkpoint is a dict of plain data and tensors — loadable with ``weights_only=True`` — or a
``.safetensors`` file whose metadata holds the same header as JSON. Writes are atomic.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .. import __version__
from ..errors import InputError
from ..io import atomic_path
from .weights import CHECKPOINT_FORMAT, CHECKPOINT_VERSION


def checkpoint_header(model: nn.Module, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The plain-data part of a checkpoint: format, versions, model config and ``meta``."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "fcn_edge_version": __version__,
        "torch_version": str(torch.__version__),  # TorchVersion is not weights_only-safe
        "model_config": model.config.to_dict(),
        "meta": dict(meta or {}),
    }


def save_checkpoint(model: nn.Module, path: str | Path, meta: Mapping[str, Any] | None = None,
                    **extra: Any) -> Path:
    """Write ``model`` (and ``meta``: class names, palette, normalisation …) atomically.

    ``extra`` entries (optimizer state, epoch …) go into a ``.pt`` checkpoint as they are;
    safetensors holds tensors only, so they are refused there.
    """
    path = Path(path)
    header = checkpoint_header(model, meta)
    clash = sorted(set(extra) & (set(header) | {"state_dict"}))
    if clash:
        raise InputError(f"extra checkpoint entries {clash} would overwrite the header; rename them")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            if extra:
                raise InputError(f"safetensors checkpoints hold weights only; drop {sorted(extra)}"
                                 f" or save to a .pt path")
            from safetensors.torch import save_file
            save_file(state, str(tmp), metadata={"format": CHECKPOINT_FORMAT,
                                                 "fcn_edge": json.dumps(header)})
        else:
            torch.save({**header, **extra, "state_dict": state}, tmp)
    return path
