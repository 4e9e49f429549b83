"""What the demo is told (:class:`DemoConfig`) and what its stages hand on (:class:`DemoState`).

Both live here, below the stages, the report and the pipeline that runs them, so that none of
those imports another to learn the shapes they share.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from ..errors import InputError
from ..models.registry import backbone_names
from ..runtime.bounds import Bound, Rule, check_bounds

if TYPE_CHECKING:  # annotations only: these modules load when the stages that use them run
    from ..bench.runner import BenchReport, BenchRow
    from ..metrics import SegmentationMetrics
    from ..runtime.stats import RunStats


@dataclass(frozen=True)
class DemoConfig:
    """What ``fcn-edge demo`` does; ``out_dir``, ``minutes`` and ``backbone`` are its CLI flags.

    By default the training work is fixed — ``train_images`` scenes × ``epochs``, seed ``seed``
    — so the result does not depend on the machine's speed or load, only the time does (the
    demo estimates it up front). ``minutes`` asks for the older sizing instead: as many scenes
    as this machine, measured at the start, trains in that budget; a slow or busy machine then
    trains on fewer scenes and gets a worse model.
    """

    out_dir: str = "runs/demo"
    minutes: float | None = None               # None: the fixed work below; else a time budget
    backbone: str = "resnet18"                 # FCN-8s on this registered trunk
    image_size: tuple[int, int] = (128, 128)   # training scenes
    train_images: int = 2400                   # scenes per epoch, unless ``minutes`` is given
    epochs: int = 4
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

    #: ``--minutes``: a training budget of up to a week.
    BOUNDS: ClassVar[Mapping[str, Rule]] = {
        "minutes": Bound(0.0, 7 * 24 * 60.0, integer=False, low_open=True)}

    def check(self) -> None:
        check_bounds(self, self.BOUNDS, flags=True)
        if self.backbone not in backbone_names():
            raise InputError(f"--backbone {self.backbone!r} is not a backbone; choose one of "
                             f"{', '.join(backbone_names())}")
        if min(self.epochs, self.batch_size, self.video_frames, self.train_images) < 1:
            raise InputError("epochs, batch_size, video_frames and train_images must be at "
                             "least 1")


@dataclass(slots=True)  # slots: a misspelt field is an AttributeError, not a new attribute
class DemoState:
    """What each stage made, for the stages after it; a field stays None until its stage ran.

    ``figures`` is the summary ``demo.json`` keeps for scripts; ``seconds`` each stage's time.
    """

    out: Path
    seconds: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    num_images: int = 0                                # data: training scenes per epoch
    train_rate: float = 0.0                            # data: images/s measured at the start
    train_threads: int | None = None                   # data: None, a thread per core; or 1
    estimate_s: float = 0.0                            # data: the training time it predicts
    checkpoint: Path | None = None                     # train: the best checkpoint
    history: list[dict] = field(default_factory=list)  # train: one row per epoch
    metrics: SegmentationMetrics | None = None         # evaluate: on held-out scenes
    classes: tuple[str, ...] = ()
    artifacts: dict[str, str] = field(default_factory=dict)  # export: "fp16 raw" → path
    bench: BenchReport | None = None                   # bench
    run_model: Path | None = None                      # run: the artifact it chose …
    run_row: BenchRow | None = None                    # … and its bench row
    run_stats: RunStats | None = None                  # run
    report: Path | None = None                         # report: report.md
