"""The demo's work stages, one function each: ``stage(config, state, log)``.

``state`` (a :class:`DemoState`) carries what a stage made to the stages after it; the last
stage, the report, is in ``report.py``; ``pipeline.STAGES`` puts them in order.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import ModelConfig, TrainConfig
from ..data import open_dataset, write_voc
from ..io import Log
from .state import DemoConfig, DemoState

if TYPE_CHECKING:  # annotations only: the bench modules load when their stage runs
    from ..bench.runner import BenchReport, BenchRow

def model_config(config: DemoConfig) -> ModelConfig:
    """The demo's model: FCN-8s on ``--backbone`` (ResNet18 by default), the 8 scene classes."""
    return ModelConfig(name="fcn8s", backbone=config.backbone, num_classes=8)


def data(config: DemoConfig, state: DemoState, log: Log) -> None:
    """Size the training and say up front how long it takes: a fixed number of scenes by
    default (as good a model on any machine), or as many as fit ``--minutes`` here."""
    rate, threads = train_speed(config)
    images = training_images(config, rate)
    state.num_images, state.train_rate, state.train_threads = images, rate, threads
    state.estimate_s = training_seconds(config, images, rate)
    state.figures.update(sizing="fixed" if config.minutes is None else "minutes",
                         train_images=images, epochs=config.epochs,
                         train_images_per_s=round(rate, 1), train_threads=threads,
                         train_estimate_s=round(state.estimate_s))
    work = f"{images} scenes × {config.epochs} epochs at {_size(config.image_size)}"
    about = f"about {_minutes(state.estimate_s)} on this machine now ({rate:.1f} images/s" + \
        (", on one thread: the machine is busy)" if threads == 1 < _cores() else ")")
    if config.minutes is None:
        log(f"  training: {work}, {about}; the work is fixed, so a slow or busy machine "
            f"takes longer but trains as good a model")
    else:
        log(f"  training: {work} to fit --minutes {config.minutes:g} at the {rate:.1f} images/s "
            f"measured now; a slower or busier machine trains on fewer scenes and the model is "
            f"weaker (leave out --minutes for the fixed work)")
    # The training scenes are rendered in memory as training reads them; the validation
    # scenes are also written in PASCAL VOC layout, to look at or to train on with --data.
    val = open_dataset("synthetic", "val", num_images=config.val_images,
                       size=config.image_size, seed=config.seed)
    log(f"  {config.val_images} validation scenes in VOC layout: "
        f"{write_voc(val, state.out / 'data', 'val')}")


def training_images(config: DemoConfig, rate: float) -> int:
    """Scenes per epoch: ``train_images`` whatever the measured ``rate``; with ``--minutes``,
    as many as ``rate`` images/s trains in the budget (a tenth kept for validation and
    checkpoints), in whole batches, at least four."""
    if config.minutes is None:
        return config.train_images
    budget = config.minutes * 60 * 0.9
    images = int(max(config.batch_size * 4, min(20000, rate * budget / config.epochs)))
    return images - images % config.batch_size


def training_seconds(config: DemoConfig, images: int, rate: float) -> float:
    """The training stage's time at ``rate``: the training passes, and the validation passes,
    forward only (about a third of a training step's work)."""
    return (images + config.val_images / 3) * config.epochs / rate


def train(config: DemoConfig, state: DemoState, log: Log) -> None:
    from ..train import train as train_model

    import torch

    cfg = TrainConfig(model=model_config(config), num_images=state.num_images,
                      val_images=config.val_images, image_size=config.image_size,
                      epochs=config.epochs, threads=state.train_threads,
                      batch_size=config.batch_size, optimizer="adamw", schedule="poly",
                      out_dir=str(state.out / "train"), seed=config.seed)
    threads, started = torch.get_num_threads(), time.perf_counter()

    def epoch_done(epoch: int, row: dict, model) -> None:
        # The bar shows the epoch's time left; this line, the whole stage's.
        left = (time.perf_counter() - started) / epoch * (config.epochs - epoch)
        log(f"  epoch {epoch}/{config.epochs}: validation mean IU {row['mean_iou']:.3f}, "
            f"training {'done' if epoch == config.epochs else f'ends in about {_minutes(left)}'}")

    try:
        result = train_model(cfg, on_epoch_end=epoch_done, progress=True)
    finally:  # training set PyTorch's threads for the whole process: put them back
        torch.set_num_threads(threads)
    state.checkpoint, state.history = result.best_path, result.history
    state.figures["best_val_miou"] = round(result.best_miou, 4)
    log(f"  best validation mean IU {result.best_miou:.3f}: {result.best_path}")


def evaluate(config: DemoConfig, state: DemoState, log: Log) -> None:
    from ..train.evaluation import evaluate_checkpoint

    metrics, classes = evaluate_checkpoint(state.checkpoint, "synthetic",
                                           num_images=config.eval_images,
                                           image_size=config.image_size, seed=config.seed + 1)
    state.metrics, state.classes = metrics, tuple(classes)
    state.figures["eval_miou"] = round(metrics.mean_iou, 4)
    log("  " + metrics.format_table(classes).replace("\n", "\n  "))


def export(config: DemoConfig, state: DemoState, log: Log) -> None:
    """fp32, fp16 and int8 ONNX, plain and raw-IO + argmax, where the bench stage finds them."""
    from ..bench.artifacts import ArtifactStore
    from ..bench.plan import ArtifactKey

    store = ArtifactStore(state.out / "artifacts", checkpoint=state.checkpoint,
                          log=lambda line: log("  " + line))
    keys = [ArtifactKey("onnx", p, io) for io in ("plain", "raw") for p in ("fp32", "fp16", "int8")]
    store.prepare(keys)
    state.artifacts = {f"{k.precision} {k.io}": str(store.path(k)) for k in keys}
    state.figures["artifacts"] = state.artifacts


def bench(config: DemoConfig, state: DemoState, log: Log) -> None:
    from ..bench.report import format_table, write_report
    from ..bench.runner import BenchConfig, bench as run_bench

    out = state.out
    report = run_bench(BenchConfig(str(state.checkpoint), images=config.bench_images,
                                   sizes=config.bench_sizes, runs=config.bench_runs,
                                   warmup=2, max_seconds=config.bench_seconds,
                                   out_dir=str(out / "bench"),
                                   artifacts_dir=str(out / "artifacts")),
                       log=lambda line: log("  " + line))
    write_report(report, out / "bench")
    log("  " + format_table(report).replace("\n", "\n  "))
    state.bench = report


def run(config: DemoConfig, state: DemoState, log: Log) -> None:
    from ..runtime.run import RunConfig, run as run_model
    from .media import write_demo_video

    out = state.out
    video = write_demo_video(out / "demo_input.avi", config.video_frames, config.video_size)
    model, row = fastest_passing(state.bench)
    state.run_model, state.run_row = model, row
    log(f"  {model.name} on {row.backend} ({row.precision}, {row.io}): the fastest artifact "
        f"that passed its check")
    stats = run_model(RunConfig(model=str(model), source=str(video), backend=row.backend,
                                output=str(out / "demo_overlay.avi"),
                                stats=str(out / "run_stats.json"), progress_every=0),
                      log=lambda line: log("  " + line))
    state.run_stats = stats
    state.figures["run_fps"] = round(stats.fps, 1)
    log(f"  {stats.frames} frames at {stats.fps:.1f} FPS → {out / 'demo_overlay.avi'}")


def fastest_passing(bench_report: BenchReport) -> tuple[Path, BenchRow]:
    """The artifact of the fastest end-to-end row whose check passed (an exported one when
    there is one: that is what an application deploys)."""
    rows = [r for r in bench_report.rows if r.status == "ok" and r.check != "FAIL"
            and r.e2e_p50_ms]
    exported = [r for r in rows if not r.backend.startswith("torch")] or rows
    if not exported:
        raise RuntimeError("no benchmarked artifact ran; see the bench table")
    best = min(exported, key=lambda r: r.e2e_p50_ms)
    return Path(best.path), best


def train_speed(config: DemoConfig, steps: int = 3) -> tuple[float, int | None]:
    """(images/s, threads) to train with: the trainer's default (None: a thread per core), or
    one thread where that measured clearly faster. On a busy machine PyTorch's threads wait on
    each other while the cores run other work: 2.4 images/s against 20 on one thread on the
    2-core machine beside a benchmark (BENCHMARKS.md, the demo). The rounding then differs,
    the work does not."""
    import torch

    cores, before = _cores(), torch.get_num_threads()
    if cores == 1:
        return train_rate(config, steps), None
    try:
        torch.set_num_threads(cores)  # as the trainer will set them
        every = train_rate(config, steps)
        torch.set_num_threads(1)
        one = train_rate(config, steps)
    finally:
        torch.set_num_threads(before)
    threads = choose_threads({cores: every, 1: one})
    return (one, 1) if threads == 1 else (every, None)


def choose_threads(rates: dict[int, float], margin: float = 1.25) -> int:
    """The thread count of ``rates`` (threads → images/s) to train with: the most threads,
    unless fewer are faster by ``margin`` (three steps are noisy; on an idle machine more
    threads are faster, and a brief disturbance should not halve the speed)."""
    most = max(rates)
    best = max(rates, key=rates.get)
    return best if rates[best] > margin * rates[most] else most


def _cores() -> int:
    return os.cpu_count() or 1  # the trainer's default: a thread per core


def train_rate(config: DemoConfig, steps: int = 3) -> float:
    """Training images per second on this machine at the demo's size and batch, now: three
    steps of the model (after one to warm up) and the rendering of their scenes, measured."""
    import torch

    from ..models import create_model

    scenes = open_dataset("synthetic", "train", num_images=config.batch_size,
                          size=config.image_size, seed=config.seed)
    start = time.perf_counter()
    for i in range(len(scenes)):  # training renders each scene as it reads it
        scenes[i]
    render = time.perf_counter() - start

    spec = model_config(config)
    model = create_model(spec.name, num_classes=spec.num_classes, backbone=spec.backbone)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(config.batch_size, 3, *config.image_size)
    y = torch.randint(0, spec.num_classes, (config.batch_size, *config.image_size))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()  # warm-up: allocation and kernel selection
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * config.batch_size / (time.perf_counter() - start + steps * render)


def _size(size) -> str:
    return f"{size[0]}×{size[1]}"


def _minutes(seconds: float) -> str:
    """``40 s``, ``4 min``, ``1.5 min``: a time to plan by, not a measurement."""
    if seconds < 90:
        return f"{max(10, round(seconds, -1)):.0f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes >= 10 else f"{minutes:.1f} min"
