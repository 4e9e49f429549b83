"""Run logs: a progress bar, one summary line per epoch, CSV + JSON lines, TensorBoard if present."""
from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ..config import TrainConfig
from ..metrics import SegmentationMetrics

_COLUMNS = ("epoch", "train_loss", "lr", "pixel_accuracy", "mean_accuracy", "mean_iou",
            "fw_iou", "seconds", "images_per_s")


class Progress:
    """``epoch 3/10 [#######.....] 120/200 loss 0.412 12.3 img/s`` — redrawn in place on a
    terminal, printed every tenth of the epoch otherwise (logs stay readable)."""

    def __init__(self, epoch: int, epochs: int, total: int, stream=None) -> None:
        # sys.stderr is looked up now, not at import: a host (or pytest) may have replaced it.
        stream = stream if stream is not None else sys.stderr
        self.epoch, self.epochs, self.total, self.stream = epoch, epochs, total, stream
        self.start, self.tty = time.perf_counter(), stream.isatty()
        self.every = max(1, total // 10)

    def update(self, done: int, loss: float, images: int) -> None:
        if not self.tty and done % self.every and done != self.total:
            return
        rate = images / max(time.perf_counter() - self.start, 1e-9)
        filled = int(20 * done / max(self.total, 1))
        text = (f"epoch {self.epoch}/{self.epochs} [{'#' * filled}{'.' * (20 - filled)}] "
                f"{done}/{self.total} loss {loss:.4f} {rate:.1f} img/s")
        self.stream.write(("\r" + text) if self.tty else text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


class RunLog:
    """Writes ``config.json`` once, then ``metrics.csv`` and ``metrics.jsonl`` every epoch."""

    def __init__(self, out_dir: Path, config: TrainConfig) -> None:
        self.out_dir, self.epochs = out_dir, config.epochs
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
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
