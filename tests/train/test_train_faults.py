"""`fcn-edge train` under the faults real deployments send, in real child processes: SIGTERM
mid-epoch and during a checkpoint write, kill -9 at several points, a full disk and a file size
limit while a checkpoint is written. Always: every checkpoint left loads (``weights_only``),
``--resume`` continues, and no unfinished write is left or taken for a checkpoint.

Tiny runs: 32×32 procedural scenes, FCN-32s ResNet18, a few batches per epoch (well under a
second), but full-size checkpoints (~90 MB with the optimizer state), so a write takes long
enough to be caught in the middle.
"""
from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from faults import (ChildOutput, assert_stopped_by, limit_file_size, run_cli, small_filesystem,
                    start_cli)

TINY = ["--data", "synthetic", "--num-images", "8", "--image-size", "32x32", "--val-images",
        "2", "--model", "fcn32s", "--backbone", "resnet18", "--batch-size", "2", "--threads",
        "1", "--device", "cpu"]


def _train(out: Path, epochs: int, *extra: str) -> list[str]:
    return ["train", *TINY, "--epochs", str(epochs), "--out", str(out), *extra]


def _resume(out: Path, *extra: str) -> list[str]:
    """Continue the run in ``out`` to the end of its epochs."""
    return ["train", "--resume", str(out / "last.pt"), "--threads", "1", "--device", "cpu",
            *extra]


def _epoch(path: Path) -> int:
    """The epoch a checkpoint finished, read as a deployment reads it: weights only, no pickle."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["state_dict"] and len(ckpt["train_state"]["history"]) == \
        ckpt["train_state"]["epoch"]
    return ckpt["train_state"]["epoch"]


def _unfinished(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob(".*.tmp"))


def _wait_for_a_write(child: ChildOutput, out: Path, timeout: float = 120) -> list[str]:
    """Poll until a checkpoint's temporary appears: its write is under way."""
    deadline = time.monotonic() + timeout
    while child.proc.poll() is None and time.monotonic() < deadline:
        if found := _unfinished(out):
            return found
        time.sleep(0.002)
    pytest.fail(f"no checkpoint write seen (exit {child.proc.poll()}): {''.join(child.err)}")


def test_sigterm_mid_epoch_keeps_the_last_checkpoint_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    child = ChildOutput(start_cli(_train(out, 3)))
    child.wait_for(r"^epoch 2/3:\s+25%")  # one batch of epoch 2 done
    child.proc.send_signal(signal.SIGTERM)
    code, _, err = child.finish()
    assert_stopped_by(signal.SIGTERM, "train", code, err)
    assert _epoch(out / "last.pt") == 1 and _epoch(out / "best.pt") == 1
    assert _unfinished(out) == []
    done = run_cli(_resume(out, "--quiet"))
    assert done.returncode == 0, done.stderr
    assert _epoch(out / "last.pt") == 3


def test_sigterm_to_the_process_group_stops_data_loader_workers_quietly(tmp_path):
    """systemd (KillMode=control-group) and ``kill -- -PGID`` signal the workers too; a worker
    killed by it made torch print "DataLoader worker … is killed by signal" over the stop."""
    out = tmp_path / "run"
    child = ChildOutput(start_cli(_train(out, 3, "--workers", "2", "--num-images", "32"),
                                  new_group=True))
    child.wait_for(r"^epoch 2/3:\s+\d+%")
    os.killpg(child.proc.pid, signal.SIGTERM)
    code, _, err = child.finish()
    assert_stopped_by(signal.SIGTERM, "train", code, err)
    assert "killed by signal" not in err and "Exception ignored" not in err, err
    assert _epoch(out / "last.pt") == 1


def test_sigterm_twice_during_a_checkpoint_write_abandons_it_whole(tmp_path):
    out = tmp_path / "run"
    child = ChildOutput(start_cli(_train(out, 3)))
    child.wait_for(r"^epoch 1/3: loss")  # epoch 1's checkpoints are written
    _wait_for_a_write(child, out)         # epoch 2's is being written
    child.proc.send_signal(signal.SIGTERM)
    child.proc.send_signal(signal.SIGTERM)
    code, _, err = child.finish()
    assert_stopped_by(signal.SIGTERM, "train", code, err)
    assert _unfinished(out) == []  # abandoned: its temporary removed
    assert _epoch(out / "last.pt") in (1, 2) and _epoch(out / "best.pt") >= 1
    done = run_cli(_resume(out, "--quiet"))
    assert done.returncode == 0, done.stderr
    assert _epoch(out / "last.pt") == 3


@pytest.mark.slow  # five real runs killed, then one resumed to the end: ~30 s on 2 cores
def test_kill_9_at_any_point_leaves_a_loadable_checkpoint_and_resume_continues(tmp_path):
    """SIGKILL cannot be caught: what is on disk must be whole by construction. Killed during
    checkpoint writes (the moment a temporary appears) and at random moments of an epoch."""
    out = tmp_path / "run"
    child = ChildOutput(start_cli(_train(out, 10)))
    child.wait_for(r"^epoch 1/10: loss")
    rng, epochs, leftovers = random.Random(0), [], 0
    for when in ("write", 0.0, "write", rng.uniform(0.1, 1.0), "write"):
        if child is None:
            child = ChildOutput(start_cli(_resume(out)))
            child.wait_for(r"^epoch \d+/10:\s+\d+%")
        if when == "write":
            _wait_for_a_write(child, out)
        else:
            time.sleep(when)
        child.proc.kill()
        child.finish()
        child = None
        leftovers = max(leftovers, len(_unfinished(out)))
        epochs.append(_epoch(out / "last.pt"))
        _epoch(out / "best.pt")
    assert epochs == sorted(epochs) and 1 <= epochs[-1] < 10
    assert leftovers >= 1  # a write really was cut short
    done = run_cli(_resume(out, "--quiet"))
    assert done.returncode == 0, done.stderr
    assert "unfinished checkpoint write" in done.stdout
    assert _epoch(out / "last.pt") == 10 and _unfinished(out) == []


def _assert_no_room(done, out: Path, strerror: str, advice: str) -> None:
    err = done.stderr.strip().splitlines()
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert len(err) == 1 and err[0].startswith(f"fcn-edge train: cannot write {out}/"), err
    assert err[0].endswith(f".pt: {strerror} ({advice} --out)"), err
    assert _epoch(out / "last.pt") == 1 and _epoch(out / "best.pt") == 1  # the previous, whole
    assert _unfinished(out) == []


def test_a_full_disk_during_a_checkpoint_write_is_one_line_and_keeps_the_last(tmp_path):
    # Epoch 1's best.pt and last.pt fit (~180 MB); epoch 2's does not.
    with small_filesystem(tmp_path / "disk", "220m") as disk:
        out = disk / "run"
        done = run_cli(_train(out, 2, "--quiet"))
        _assert_no_room(done, out, "No space left on device", "free space or choose another")


def test_a_file_size_limit_during_a_checkpoint_write_is_one_line_and_keeps_the_last(tmp_path):
    out = tmp_path / "run"
    first = run_cli(_train(out, 1, "--quiet"))
    assert first.returncode == 0, first.stderr
    limit = (out / "last.pt").stat().st_size // 2  # config.json and the logs fit; a checkpoint not
    done = run_cli(_resume(out, "--quiet", "--epochs", "2"),
                   preexec_fn=limit_file_size(limit))
    _assert_no_room(done, out, "File too large",
                    "raise the file size limit (ulimit -f) or choose another")
