"""The training loop: whole-image SGD on the per-pixel loss (paper §4), validated every epoch.

``train(config)`` builds the data, the model (optionally initialised from an ImageNet classifier
or a coarser FCN for staged training), the optimizer and schedule, then runs epochs. After each
epoch rank 0 writes ``last.pt`` and, when mean IU improved, ``best.pt`` — atomically, with
everything needed to deploy (classes, palette, normalisation, metrics) and to resume exactly
(optimizer, schedule, epoch, RNG states).
"""
from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..data import SYNTHETIC_READERS, TrainAugment
from ..errors import InputError, TrainingDiverged
from ..models import build
from ..models.loading import apply_weights
from ..models.weights import read_weights
from .checkpoint import (copy_checkpoint, load_training_state, remove_unfinished_writes,
                         save_training_checkpoint)
from .distributed import Context, barrier, mean_across_ranks, setup, teardown
from .evaluation import evaluate_tasks
from .loader import AugmentedDataset, EpochSampler, make_loader
from .logs import RunLog
from .loss import pixel_loss
from .optim import make_optimizer, make_scheduler
from .tasks import check_modalities, configure_tasks, open_split, task_classes


@dataclass
class TrainResult:
    """Where the run left its checkpoints, and its per-epoch history."""

    out_dir: Path
    best_path: Path | None
    last_path: Path | None
    best_miou: float
    history: list[dict[str, Any]] = field(default_factory=list)


EpochCallback = Callable[[int, dict[str, Any], nn.Module], None]


def train(config: TrainConfig, on_epoch_end: EpochCallback | None = None,
          progress: bool = True) -> TrainResult:
    """Run ``config``; ``on_epoch_end(epoch, row, model)`` runs after each epoch's checkpoint."""
    ctx = setup(config.device)
    try:
        return _Trainer(config, ctx, progress).run(on_epoch_end)
    finally:
        teardown(ctx)


class _Trainer:
    def __init__(self, config: TrainConfig, ctx: Context, progress: bool) -> None:
        self.ctx, self.progress = ctx, progress and ctx.is_main
        _set_threads(config, ctx)
        resume = load_training_state(config.resume) if config.resume else None
        if resume is not None:  # the run continues as it was configured, for more epochs if asked
            config = replace(TrainConfig.from_dict(resume["train_config"]),
                             epochs=max(config.epochs, resume["train_config"]["epochs"]),
                             resume=config.resume, out_dir=config.out_dir)
        self.train_set, self.val_set = _open_data(config)
        # The model's outputs come from the data: one head per task (paper §5), or its classes.
        config = configure_tasks(config, self.train_set)
        for data in (self.train_set, self.val_set):
            check_modalities(data, config.model.input_names)
        if config.class_weights and len(config.class_weights) != config.model.num_classes:
            raise InputError(f"class_weights has {len(config.class_weights)} values for the "
                             f"data's {config.model.num_classes} classes"
                             + (f" of the first head ({config.tasks[0]})" if config.tasks
                                else ""))
        self.config = config
        self.heads = tuple(t for t, _ in config.model.heads)  # () for one task
        self.task_weights = config.task_weights or (1.0,) * max(1, len(self.heads))
        torch.manual_seed(config.seed)
        self.model = self._build_model(resume)
        self.amp = config.amp if config.amp is not None else ctx.device.type == "cuda"
        self.class_weights = (torch.tensor(config.class_weights, dtype=torch.float32,
                                           device=ctx.device) if config.class_weights else None)
        self.loader, self.sampler, self.augmented = self._make_loader()
        self.optimizer = make_optimizer(self.model, config)
        self.scheduler = make_scheduler(self.optimizer, config, len(self.loader))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.start_epoch, self.best_miou, self.history = 1, -1.0, []
        if resume is not None:
            self._restore(resume)
        self.net = self._wrap(self.model)
        self.log = RunLog(Path(config.out_dir), config) if ctx.is_main else None
        if ctx.is_main and (stale := remove_unfinished_writes(Path(config.out_dir))):
            print(f"removed {len(stale)} unfinished checkpoint write(s) a stopped run left in "
                  f"{config.out_dir}")

    # --- setup ---------------------------------------------------------------------------
    def _build_model(self, resume: dict | None) -> nn.Module:
        model = build(self.config.model)
        source = self.config.weights or self.config.init_from
        if resume is not None:
            model.load_state_dict(resume["state_dict"])
        elif source:
            report = apply_weights(model, read_weights(source))
            if self.ctx.is_main:
                print(f"initialised from {source}: {report.summary()}")
        model.to(self.ctx.device)
        if self.ctx.device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        return model

    def _make_loader(self):
        cfg = self.config
        augment = TrainAugment(mirror=cfg.mirror, translate=cfg.translate, scale=cfg.scale,
                               crop=cfg.crop, ignore_index=self.train_set.ignore_index)
        data = AugmentedDataset(self.train_set, cfg.mean, cfg.std, augment, cfg.seed,
                                cfg.model.input_names, cfg.tasks)
        sampler = EpochSampler(len(data), cfg.seed, shuffle=True, rank=self.ctx.rank,
                               world=self.ctx.world)
        loader = make_loader(data, sampler, cfg.batch_size, cfg.workers,
                             self.train_set.ignore_index)
        return loader, sampler, data

    def _wrap(self, model: nn.Module) -> nn.Module:
        if not self.ctx.distributed:
            return model
        ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        # A head weighted 0 gets no gradient at all: DDP must be told some may be unused.
        return nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=0.0 in self.task_weights)

    def _restore(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"]) + 1
        self.best_miou = float(state["best_miou"])
        self.history = list(state["history"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(_numpy_state(state["rng"]["numpy"]))
        random.setstate(_python_state(state["rng"]["python"]))

    # --- the loop ------------------------------------------------------------------------
    def run(self, on_epoch_end: EpochCallback | None) -> TrainResult:
        cfg, out = self.config, Path(self.config.out_dir)
        if self.ctx.is_main and self.start_epoch > cfg.epochs:
            print(f"nothing to do: the checkpoint finished epoch {self.start_epoch - 1} of "
                  f"{cfg.epochs}; pass more --epochs to continue")
        for epoch in range(self.start_epoch, cfg.epochs + 1):
            start = time.perf_counter()
            loss, images = self._train_epoch(epoch)
            per_task = self._validate()
            metrics = next(iter(per_task.values()))  # the first head's: it picks best.pt
            row = {"epoch": epoch, "train_loss": loss, "lr": self.scheduler.get_last_lr()[0],
                   **_summary(metrics), "seconds": time.perf_counter() - start,
                   "images_per_s": images / max(time.perf_counter() - start, 1e-9)}
            if self.heads:  # paper Table 5: every task's four metrics
                row.update({f"{task}/{k}": v for task, m in per_task.items()
                            for k, v in _summary(m).items()})
            self.history.append(row)
            improved = metrics.mean_iou > self.best_miou
            self.best_miou = max(self.best_miou, metrics.mean_iou)
            if self.ctx.is_main:
                self._checkpoint(epoch, metrics, improved, per_task)
                first = cfg.tasks[0] if cfg.tasks else None
                self.log.write(row, metrics, task_classes(self.val_set, first),
                               {t: (m, task_classes(self.val_set, t)) for t, m in
                                per_task.items()} if self.heads else None)
            barrier(self.ctx)
            if on_epoch_end is not None:
                on_epoch_end(epoch, row, self.model)
        best, last = out / "best.pt", out / "last.pt"
        return TrainResult(out, best if best.exists() else None, last if last.exists() else None,
                           self.best_miou, self.history)

    def _validate(self) -> dict[str, Any]:
        """{task: SegmentationMetrics} on the validation set, in head order."""
        cfg = self.config
        task = cfg.tasks[0] if cfg.tasks and not self.heads else None
        cms = evaluate_tasks(self.model, self.val_set, cfg.mean, cfg.std, self.ctx.device,
                             self.ctx, self.amp, task=task)
        return {name: cm.compute() for name, cm in cms.items()}

    def _train_epoch(self, epoch: int) -> tuple[float, int]:
        self.sampler.epoch = self.augmented.epoch = epoch
        self.net.train()
        total, count, images = 0.0, 0, 0
        bar = self.log.progress(epoch, len(self.loader)) if self.progress and self.log else None
        for step, (x, y) in enumerate(self.loader):
            if self.config.max_steps is not None and step >= self.config.max_steps:
                break
            loss = self._step(x, y, epoch, step)
            total, count, images = total + loss, count + 1, images + len(x)
            if bar is not None:
                bar.update(step + 1, total / count, images)
        if bar is not None:
            bar.close()
        return mean_across_ranks(total / max(count, 1), self.ctx), images * self.ctx.world

    def _step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int) -> float:
        cfg, dev = self.config, self.ctx.device
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        sampling = hash((cfg.seed, epoch, step, self.ctx.rank)) & 0xFFFF_FFFF
        with torch.autocast(dev.type, dtype=torch.float16, enabled=self.amp):
            logits = self.net(x)
        loss = self._loss(logits, y, sampling)
        self._check_finite(loss, epoch, step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach())

    def _loss(self, logits, y: torch.Tensor, sampling: int) -> torch.Tensor:
        """The per-pixel loss (paper §4.1); for several heads the ``task_weights``-weighted
        sum of each head's (paper §5, SIFT Flow). Class weights are the first head's. Every
        head drops the same loss-sampling cells (§3.4); a head weighted 0 is left out of the
        graph, so its parameters get no gradient and no weight decay."""
        cfg = self.config
        options = dict(ignore_index=self.train_set.ignore_index, normalize=cfg.recipe == "paper",
                       sample_p=cfg.loss_sample_p)
        if not self.heads:
            loss = pixel_loss(logits.float(), y, class_weights=self.class_weights,
                              generator=torch.Generator().manual_seed(sampling), **options)
            weight = self.task_weights[0]
            return loss if weight == 1.0 else loss * weight
        total = None
        for k, (task, weight) in enumerate(zip(self.heads, self.task_weights)):
            if weight == 0.0:
                continue
            loss = weight * pixel_loss(logits[task].float(), y[:, k],
                                       class_weights=self.class_weights if k == 0 else None,
                                       generator=torch.Generator().manual_seed(sampling),
                                       **options)
            total = loss if total is None else total + loss
        return total

    def _check_finite(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0])
        if self.ctx.distributed:  # every rank must stop together, or the others hang
            bad = torch.tensor([mean_across_ranks(float(bad), self.ctx)])
        if float(bad) > 0:
            kept = Path(self.config.out_dir) / "last.pt"
            where = f"the last good checkpoint is {kept}" if kept.exists() else \
                "no checkpoint was written yet"
            raise TrainingDiverged(f"the loss became {float(loss.detach())} at epoch {epoch}, step "
                                   f"{step}; training stopped and {where}. Lower the learning "
                                   f"rate (--lr, now {self.config.effective_lr:g})")

    def _checkpoint(self, epoch: int, metrics, improved: bool, per_task: dict) -> None:
        out = Path(self.config.out_dir)
        state = {
            "epoch": epoch, "best_miou": self.best_miou, "history": self.history,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.amp else {},
            "rng": {"torch": torch.get_rng_state(), "numpy": _plain(np.random.get_state()),
                    "python": _plain(random.getstate())},
        }
        # best.pt first: stopped between the two writes (SIGTERM, kill -9), last.pt is still
        # the previous epoch, so --resume redoes this one and writes both; the other order
        # would resume past an improvement that best.pt never got.
        first = out / ("best.pt" if improved else "last.pt")
        save_training_checkpoint(first, self.model, self.config, self.train_set,
                                 metrics, state, per_task if self.heads else None)
        if improved:
            copy_checkpoint(first, out / "last.pt")


def _open_data(config: TrainConfig):
    """(train, val) sets: the procedural ones ("synthetic", "synthetic-rgbd",
    "synthetic-twotask") as the config sizes them, a folder by its splits."""
    common = {"size": config.image_size, "seed": config.seed,
              "difficulty": config.difficulty}
    names = config.model.input_names
    if config.data in SYNTHETIC_READERS:
        return (open_split(config.data, "train", None, names, num_images=config.num_images,
                           **common),
                open_split(config.data, "val", None, names, num_images=config.val_images,
                           **common))
    return (open_split(config.data, config.train_split, config.data_layout, names),
            open_split(config.data, config.val_split, config.data_layout, names))


def _summary(metrics) -> dict[str, float]:
    """The paper's four metrics (§5) of a ``SegmentationMetrics``."""
    return {k: v for k, v in metrics.to_dict().items()
            if k in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou")}


def _set_threads(config: TrainConfig, ctx: Context) -> None:
    """On CPU, split the cores between the ranks of this machine; intra-op threads only."""
    if ctx.device.type != "cpu":
        return
    threads = config.threads or max(1, (os.cpu_count() or 1) // max(1, ctx.world))
    torch.set_num_threads(threads)


def _plain(state: Any) -> Any:
    """RNG states as lists/ints/strings, loadable with ``weights_only=True``."""
    if isinstance(state, tuple):
        return [_plain(v) for v in state]
    if isinstance(state, np.ndarray):
        return state.tolist()
    return state


def _numpy_state(state: list) -> tuple:
    return (state[0], np.array(state[1], dtype=np.uint32), *state[2:])


def _python_state(state: list) -> tuple:
    return (state[0], tuple(state[1]), state[2])


__all__ = ["train", "TrainResult"]
