"""``fcn-edge demo``: the whole pipeline on the built-in procedural data, in one command.

1. data      — procedural scenes (the working default: no download): how many, and how long
                training them takes here
2. train     — FCN-8s ResNet18 or ``--backbone`` (paper §4.2) from scratch, AdamW, poly
3. evaluate  — the paper's four metrics and per-class IoU (§5) on held-out scenes
4. export    — verified ONNX in fp32, fp16 and int8 (+ raw-IO/argmax for the bench)
5. bench     — every backend here × precision against the PyTorch fp32 reference
6. run       — the fastest artifact that passed its check segments a rendered video
7. report    — report.md with the tables, the training curve and a grid of overlays

Training is a fixed amount of work by default (``DemoConfig.train_images`` scenes × ``epochs``,
one seed): the model is the same on a slow or busy machine, only the time changes, and that time
is estimated from three measured steps and shown before training starts. ``minutes`` sizes the
data set to a time budget instead, at the speed measured then, so that the poly learning-rate
schedule ends where the budget does; its quality then follows the machine's speed and load.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..io import Log, atomic_path
from . import report, stages
from .state import DemoConfig, DemoState

Stage = Callable[[DemoConfig, DemoState, Log], None]
#: The stages in the order they run, each ``stage(config, state, log)``.
STAGES: tuple[tuple[str, Stage], ...] = (
    ("data", stages.data), ("train", stages.train), ("evaluate", stages.evaluate),
    ("export", stages.export), ("bench", stages.bench), ("run", stages.run),
    ("report", report.report))
STAGE_NAMES = tuple(name for name, _ in STAGES)


@dataclass
class DemoResult:
    out_dir: Path
    report: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)


def run_demo(config: DemoConfig, log: Log = print) -> DemoResult:
    """Run every stage; see the module docstring. Each stage's time is in ``seconds``."""
    config.check()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = DemoState(out)
    started = time.perf_counter()
    for number, (name, stage) in enumerate(STAGES, 1):
        log(f"[{number}/{len(STAGES)}] {name} (at {_clock(time.perf_counter() - started)})")
        t0 = time.perf_counter()
        stage(config, state, log)
        state.seconds[name] = round(time.perf_counter() - t0, 1)
    state.seconds["total"] = round(time.perf_counter() - started, 1)
    result = DemoResult(out, state.report, state.seconds, state.figures)
    with atomic_path(out / "demo.json") as tmp:  # for scripts; report.md is for people
        tmp.write_text(json.dumps({"config": asdict(config), "seconds": result.seconds,
                                   "figures": result.figures}, indent=2, default=str))
    log(f"done in {_clock(result.seconds['total'])}: {result.report}")
    return result


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
