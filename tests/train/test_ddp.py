"""Distributed data parallel with two real CPU processes under gloo, launched by torchrun."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fcn_edge.models import read_weights
from fcn_edge.train import evaluate_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_gloo_processes_train_checkpoint_once_and_reduce_metrics(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "fcn_edge", "train", "--model", "fcn32s", "--backbone", "resnet18",
           "--num-images", "6", "--val-images", "5", "--image-size", "64x64", "--epochs", "2",
           "--threads", "1", "--seed", "4", "--out", str(out), "--quiet", "--device", "cpu"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    # Rank 0 alone logs: one summary line per epoch, one CSV row per epoch.
    assert result.stdout.count("epoch 1/2:") == 1 and result.stdout.count("epoch 2/2:") == 1
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]
    assert not list(out.glob(".*.tmp"))
    # Each rank validated a shard (5 images over 2 ranks); the summed confusion matrix must
    # give exactly what one process finds on the whole validation set.
    logged = float(rows[-1]["mean_iou"])
    metrics, _ = evaluate_checkpoint(out / "last.pt", num_images=5, image_size=(64, 64), seed=4,
                                     device="cpu")
    assert metrics.mean_iou == pytest.approx(logged, abs=1e-9)
    state = read_weights(out / "last.pt").checkpoint["train_state"]
    assert state["epoch"] == 2
    # 6 images over 2 ranks, batch 1: 3 optimizer steps per epoch on each rank, 6 in all.
    assert state["scheduler"]["last_epoch"] == 6
