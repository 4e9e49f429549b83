"""``fcn-edge demo``: the whole pipeline on the built-in procedural data, in one command.

1. data      — procedural scenes (the working default: no download), sized to the time budget
2. train     — FCN-8s ResNet18 (paper §4.2) from scratch, AdamW, for ``minutes`` of this machine
3. evaluate  — the paper's four metrics and per-class IoU (§5) on held-out scenes
4. export    — verified ONNX in fp32, fp16 and int8 (+ raw-IO/argmax for the bench)
5. bench     — every backend here × precision against the PyTorch fp32 reference
6. run       — the fastest artifact that passed its check segments a rendered video
7. report    — report.md with the tables, the training curve and a grid of overlays

The training budget is met by measuring this machine's training speed first (three steps) and
sizing the data set to it, so the poly learning-rate schedule ends where the budget does.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io import Log, atomic_path

STAGES = ("data", "train", "evaluate", "export", "bench", "run", "report")


@dataclass(frozen=True)
class DemoConfig:
    """What ``fcn-edge demo`` does; ``out_dir`` and ``minutes`` are its CLI flags."""

    out_dir: str = "runs/demo"
    minutes: float = 4.0                       # training budget; the rest takes ~2–3 minutes
    image_size: tuple[int, int] = (128, 128)   # training scenes
    epochs: int = 8
    batch_size: int = 8
    val_images: int = 50
    eval_images: int = 100
    bench_sizes: tuple[tuple[int, int], ...] = ((256, 512),)
    bench_images: int = 8
    bench_runs: int = 20
    bench_seconds: float = 3.0
    video_size: tuple[int, int] = (256, 512)
    video_frames: int = 120
    samples: int = 4                           # rows of the overlay grid
    seed: int = 0

    def check(self) -> None:
        if not self.minutes > 0:
            raise InputError(f"--minutes must be positive, got {self.minutes}")
        if self.epochs < 1 or self.batch_size < 1 or self.video_frames < 1:
            raise InputError("epochs, batch_size and video_frames must be at least 1")


@dataclass
class DemoResult:
    out_dir: Path
    report: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    figures: dict = field(default_factory=dict)


def run_demo(config: DemoConfig, log: Log = print) -> DemoResult:
    """Run every stage; see the module docstring. Each stage's time is in ``seconds``."""
    from . import stages

    config.check()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out)
    state: dict = {"seconds": result.seconds}
    started = time.perf_counter()
    for number, name in enumerate(STAGES, 1):
        log(f"[{number}/{len(STAGES)}] {name} (at {_clock(time.perf_counter() - started)})")
        t0 = time.perf_counter()
        getattr(stages, name)(config, out, state, log)
        result.seconds[name] = round(time.perf_counter() - t0, 1)
    result.seconds["total"] = round(time.perf_counter() - started, 1)
    result.report = state.get("report")
    result.figures = state.get("figures", {})
    with atomic_path(out / "demo.json") as tmp:  # for scripts; report.md is for people
        tmp.write_text(json.dumps({"config": asdict(config), "seconds": result.seconds,
                                   "figures": result.figures}, indent=2, default=str))
    log(f"done in {_clock(result.seconds['total'])}: {result.report}")
    return result


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
