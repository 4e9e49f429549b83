"""Latency measurement: medians and nearest-rank p99, warm-up and run counts, the time limit,
interleaved rounds, and the sgemm ceiling (real BLAS, briefly)."""
from __future__ import annotations

import math
import random
import time

import pytest

from fcn_edge.bench.timing import Timing, interleaved, measure, sgemm_gflops, summarize
from fcn_edge.errors import InputError


def _counter():
    calls = []

    def call():
        calls.append(time.perf_counter())
    return call, calls


# --- summarize --------------------------------------------------------------------------------

def test_summarize_one_to_a_hundred():
    samples = [float(v) for v in range(1, 101)]
    random.Random(0).shuffle(samples)
    t = summarize(samples)
    assert t == Timing(p50=50.5, p99=99.0, mean=50.5, runs=100)
    assert samples[0] != 1.0  # the input was not sorted, and is not required to be


def test_summarize_nearest_rank_on_small_lists():
    assert summarize([3.0, 1.0, 2.0]) == Timing(2.0, 3.0, 2.0, 3)  # rank ceil(2.97) = 3
    assert summarize([7.0]) == Timing(7.0, 7.0, 7.0, 1)
    many = [1.0] * 199 + [1000.0]   # 200 samples: p99 is rank 198, one outlier does not move it
    assert summarize(many).p99 == 1.0 and summarize(many).p50 == 1.0
    assert summarize(many + [1000.0] * 2).p99 == 1000.0  # 202: rank 200 is an outlier


def test_summarize_without_samples_is_an_input_error():
    with pytest.raises(InputError, match="no timed calls"):
        summarize([])


def test_fps_is_per_second_at_the_median():
    assert Timing(4.0, 9.0, 5.0, 10).fps == 250.0
    assert Timing(0.0, 0.0, 0.0, 1).fps == math.inf


# --- measure ----------------------------------------------------------------------------------

def test_measure_makes_warmup_then_runs_calls():
    call, calls = _counter()
    t = measure(call, runs=7, warmup=3, max_seconds=60.0)
    assert len(calls) == 10 and t.runs == 7
    assert 0 <= t.p50 <= t.p99 and t.mean >= 0


def test_measure_without_warmup():
    call, calls = _counter()
    assert measure(call, runs=4, warmup=0).runs == 4 and len(calls) == 4


def test_measure_times_what_the_call_takes():
    t = measure(lambda: time.sleep(0.004), runs=3, warmup=0)
    assert t.p50 >= 4.0 and t.p99 >= t.p50  # milliseconds; sleep never returns early


def test_max_seconds_stops_early_but_keeps_min_runs():
    call, calls = _counter()
    t = measure(call, runs=1000, warmup=2, max_seconds=0.0, min_runs=4)
    assert t.runs == 4 and len(calls) == 2 + 4
    call, calls = _counter()
    t = measure(call, runs=2, warmup=1, max_seconds=0.0, min_runs=5)  # never more than runs
    assert t.runs == 2 and len(calls) == 3


def test_max_seconds_stops_once_that_much_was_timed():
    t = measure(lambda: time.sleep(0.01), runs=1000, warmup=0, max_seconds=0.05, min_runs=2)
    assert 2 <= t.runs <= 6  # 10 ms each: past 50 ms after five calls (six for rounding)


@pytest.mark.parametrize("runs, warmup", [(0, 1), (-1, 0), (5, -1)])
def test_bad_counts_are_input_errors(runs, warmup):
    call, calls = _counter()
    with pytest.raises(InputError, match=f"runs={runs}, warmup={warmup}"):
        measure(call, runs=runs, warmup=warmup)
    with pytest.raises(InputError, match="runs must be ≥ 1"):
        interleaved({"a": call}, runs=runs, warmup=warmup)
    assert calls == []  # refused before any call


# --- interleaved ------------------------------------------------------------------------------

def test_interleaved_warms_each_up_then_alternates_rounds():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    result = interleaved(calls, runs=3, warmup=2)
    assert order == ["a", "a", "b", "b", "c", "c"] + ["a", "b", "c"] * 3
    assert list(result) == ["a", "b", "c"] and all(t.runs == 3 for t in result.values())


def test_interleaved_stops_once_one_contender_used_max_seconds_but_not_before_min_runs():
    calls = {"slow": lambda: time.sleep(0.02), "fast": lambda: None}
    result = interleaved(calls, runs=1000, warmup=0, max_seconds=0.05, min_runs=2)
    assert 2 <= result["slow"].runs == result["fast"].runs <= 3  # rounds end together
    floor = interleaved(calls, runs=1000, warmup=0, max_seconds=0.001, min_runs=4)
    assert floor["slow"].runs == floor["fast"].runs == 4
    assert interleaved(calls, runs=2, warmup=0, max_seconds=0.001)["fast"].runs == 2


def test_interleaved_in_turns_of_a_block_of_calls():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b")}
    result = interleaved(calls, runs=5, warmup=1, block=2)
    assert order == ["a", "b"] + ["a", "a", "b", "b"] * 2 + ["a", "b"]  # the last turn: 1
    assert result["a"].runs == result["b"].runs == 5


def test_interleaved_times_each_contender_separately():
    result = interleaved({"slow": lambda: time.sleep(0.005), "fast": lambda: None},
                         runs=3, warmup=0)
    assert result["slow"].p50 >= 5.0 > result["fast"].p50


# --- sgemm_gflops -----------------------------------------------------------------------------

def test_sgemm_gflops_is_a_positive_finite_rate():
    import torch

    threads = torch.get_num_threads()
    one = sgemm_gflops(threads=1, n=256, seconds=0.1)
    assert torch.get_num_threads() == threads  # the process-wide setting is given back
    rate = one
    assert math.isfinite(rate) and 0.05 < rate < 1e5  # GFLOP/s of one core, any CPU
