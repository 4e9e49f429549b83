"""Run logs: a progress bar, one summary line per epoch, CSV + JSON lines, TensorBoard if present."""
from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from ..config import TrainConfig
from ..io import atomic_path
from ..metrics import SegmentationMetrics

_COLUMNS = ("epoch", "train_loss", "lr", "pixel_accuracy", "mean_accuracy", "mean_iou",
            "fw_iou", "seconds", "images_per_s")


class Progress:
    """A tqdm bar per epoch, ``epoch 3/10:  60%|######    | 120/200 [00:09<00:06, …,
    loss 0.4120 12.3 img/s]``: redrawn in place on a terminal; elsewhere (a log file, CI) the
    same line is printed every tenth of the epoch, since tqdm's in-place redraws would pile up
    as one endless line there."""

    def __init__(self, epoch: int, epochs: int, total: int, stream=None) -> None:
        # sys.stderr is looked up now, not at import: a host (or pytest) may have replaced it.
        self.stream = stream if stream is not None else sys.stderr
        self.desc, self.total = f"epoch {epoch}/{epochs}", total
        self.start, self.tty = time.perf_counter(), self.stream.isatty()
        self.every = max(1, total // 10)
        self.bar = tqdm(total=total, desc=self.desc, unit="batch", file=self.stream,
                        dynamic_ncols=True, disable=not self.tty)

    def update(self, done: int, loss: float, images: int) -> None:
        elapsed = time.perf_counter() - self.start
        postfix = f"loss {loss:.4f} {images / max(elapsed, 1e-9):.1f} img/s"
        if self.tty:
            self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(done - self.bar.n)
        elif done % self.every == 0 or done == self.total:
            self.stream.write(tqdm.format_meter(done, self.total, elapsed, prefix=self.desc,
                                                unit="batch", postfix=postfix, ascii=True)
                              + "\n")
            self.stream.flush()

    def close(self) -> None:
        self.bar.close()


class RunLog:
    """Writes ``config.json`` once, then ``metrics.csv`` and ``metrics.jsonl`` every epoch."""

    def __init__(self, out_dir: Path, config: TrainConfig) -> None:
        self.out_dir, self.epochs = out_dir, config.epochs
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / "config.json") as tmp:  # a stopped run: old or new, whole
            tmp.write_text(json.dumps(config.to_dict(), indent=2))
        self.tensorboard = _tensorboard(out_dir)

    def progress(self, epoch: int, total: int) -> Progress:
        return Progress(epoch, self.epochs, total)

    def write(self, row: dict[str, Any], metrics: SegmentationMetrics,
              classes: Sequence[str],
              tasks: dict[str, tuple[SegmentationMetrics, Sequence[str]]] | None = None) -> None:
        """One epoch: ``metrics``/``classes`` are the first head's; a multi-task run also
        gives ``tasks`` (task → metrics, classes) and ``task/metric`` keys in ``row``."""
        per_task = [k for k in row if "/" in k]  # "geometric/mean_iou" …: extra columns
        columns = (*_COLUMNS, *per_task)
        csv_path = self.out_dir / "metrics.csv"
        new = not csv_path.exists()
        with open(csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            if new:
                writer.writeheader()
            writer.writerow({k: row.get(k) for k in columns})
        extra = {"per_task_class_iou": {t: dict(zip(names, m.to_dict()["iou"]))
                                        for t, (m, names) in tasks.items()}} if tasks else {}
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({**row, "per_class_iou": dict(zip(
                classes, metrics.to_dict()["iou"])), **extra}) + "\n")
        if self.tensorboard is not None:
            for key in columns[1:]:
                self.tensorboard.add_scalar(key, row[key], row["epoch"])
            self.tensorboard.flush()
        print(f"epoch {row['epoch']}/{self.epochs}: loss {row['train_loss']:.4f}  "
              f"pixel acc {row['pixel_accuracy']:.3f}  mean acc {row['mean_accuracy']:.3f}  "
              f"mean IU {row['mean_iou']:.3f}  f.w. IU {row['fw_iou']:.3f}  "
              f"({row['seconds']:.0f} s, {row['images_per_s']:.1f} img/s)", flush=True)
        for task in tasks or {}:
            print(f"  {task}: pixel acc {row[task + '/pixel_accuracy']:.3f}  mean acc "
                  f"{row[task + '/mean_accuracy']:.3f}  mean IU {row[task + '/mean_iou']:.3f}"
                  f"  f.w. IU {row[task + '/fw_iou']:.3f}", flush=True)


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional: its absence is not worth a warning
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))
