"""How much the demo trains: fixed work by default, whatever the machine's speed or load, with
its time estimated up front; ``--minutes`` keeps the time-budgeted sizing and says so."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fcn_edge.demo import DemoConfig, DemoState, stages
from fcn_edge.demo.report import sizing_sentence

SMALL = dict(image_size=(64, 64), batch_size=4, train_images=48, epochs=2, val_images=4)


def test_the_default_trains_the_same_scenes_at_any_speed():
    config = DemoConfig(**SMALL)
    slow, fast = (stages.training_images(config, rate) for rate in (2.0, 200.0))
    assert slow == fast == 48
    assert DemoConfig().minutes is None  # fixed work unless --minutes is given


def test_minutes_keeps_the_budget_sizing():
    config = DemoConfig(**dict(SMALL, minutes=2.0))
    slow, fast = (stages.training_images(config, rate) for rate in (2.0, 20.0))
    assert slow == 108 and fast == 1080  # rate × 0.9 × 120 s / 2 epochs, in whole batches
    assert stages.training_images(config, 0.3) == 16  # never under four batches of 4
    assert stages.training_images(config, 1.1) == 56  # 59.4 scenes: whole batches


def test_the_estimate_counts_training_and_validation_passes():
    config = DemoConfig(**SMALL)
    # (48 scenes + 4 validation scenes at a third of the cost) × 2 epochs at 10 images/s
    assert stages.training_seconds(config, 48, 10.0) == pytest.approx((48 + 4 / 3) * 2 / 10)


def test_one_thread_is_chosen_only_where_it_is_clearly_faster():
    """On a busy machine PyTorch's threads wait on each other: one thread can be 8× faster."""
    assert stages.choose_threads({2: 2.4, 1: 20.5}) == 1      # measured beside a benchmark
    assert stages.choose_threads({2: 39.0, 1: 22.0}) == 2     # more threads faster
    assert stages.choose_threads({2: 10.0, 1: 12.0}) == 2     # within the noise of 3 steps
    assert stages.choose_threads({4: 10.0}) == 4


def _busy_loops(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def test_a_busy_machine_gets_the_same_work_and_a_longer_estimate_up_front(tmp_path):
    """The data stage on this machine as it is, then with busy loops on every core: the same
    scenes × epochs both times, said in the first line, with the time the speed now gives."""
    config = DemoConfig(**SMALL)
    runs = []
    for busy in (0, len(os.sched_getaffinity(0))):  # one loop per core
        loops = _busy_loops(busy)
        try:
            state, lines = DemoState(tmp_path / f"busy{busy}"), []
            stages.data(config, state, lines.append)
        finally:
            for loop in loops:
                loop.kill()
                loop.wait()
        runs.append((state, lines))
    (idle, idle_lines), (loaded, loaded_lines) = runs
    assert idle.num_images == loaded.num_images == 48
    for state, lines in runs:
        assert lines[0].startswith("  training: 48 scenes × 2 epochs at 64×64, about ")
        assert "on this machine now" in lines[0] and "the work is fixed" in lines[0]
        assert state.estimate_s == pytest.approx(
            stages.training_seconds(config, 48, state.train_rate))
        assert state.figures["sizing"] == "fixed" and state.figures["train_images"] == 48
        assert state.train_threads in (None, 1)  # a thread per core, or one when faster
        assert ("on one thread: the machine is busy" in lines[0]) == (state.train_threads == 1)


def test_minutes_says_the_model_follows_the_machine(tmp_path):
    config = DemoConfig(**dict(SMALL, minutes=0.5))
    state, lines = DemoState(tmp_path), []
    stages.data(config, state, lines.append)
    assert state.num_images == stages.training_images(config, state.train_rate)
    assert "to fit --minutes 0.5 at the" in lines[0] and "weaker" in lines[0]
    assert state.figures["sizing"] == "minutes"
    state.seconds["train"] = 30.0
    sentence = sizing_sentence(config, state)
    assert "sized to fit `--minutes 0.5`" in sentence and "speed and load" in sentence
    fixed = sizing_sentence(DemoConfig(**SMALL), state)
    assert "a fixed amount of work" in fixed and "seed 0" in fixed and "--minutes" not in fixed
    state.train_threads = 1
    assert "on one thread: the machine was busy" in sizing_sentence(DemoConfig(**SMALL), state)


def test_the_help_says_the_work_is_fixed_and_minutes_is_a_budget():
    done = subprocess.run([sys.executable, "-m", "fcn_edge", "demo", "--help"],
                          capture_output=True, text=True, check=True)
    text = " ".join(done.stdout.split())
    config = DemoConfig()  # the help states the defaults' numbers
    assert f"{config.train_images} scenes x {config.epochs} epochs" in text
    assert "same model on any machine" in text
    assert "--minutes MINUTES train for this many minutes instead of the fixed work" in text
