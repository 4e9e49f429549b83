"""Training (paper §4): per-pixel loss, SGD with the paper's recipe, staged 32s → 16s → 8s,
checkpoints that deploy and resume, and distributed data parallel through torchrun.

``from fcn_edge.train import train, evaluate_checkpoint`` — loaded on first use, so that
importing a submodule (``fcn_edge.train.loss``) stays cheap.
"""
from __future__ import annotations

import importlib

_EXPORTS = {"train": "loop", "TrainResult": "loop", "evaluate_checkpoint": "evaluation",
            "evaluate_tasks": "evaluation", "evaluate_checkpoint_tasks": "evaluation"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
