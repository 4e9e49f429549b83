"""The runner of benchmarks/gpu_check.py and the statistics its sections share: Context and
Section, run_sections (each section on its own share of the budget, stopped by a hard limit when
it outlives it, recorded whatever happens), attempt (one measurement, its figures or its error),
the per-call timing and its figures, the fp16 labels' agreement and the 1000 FPS goal, and the
JSON report written atomically. The sections are in gpu_check_models.py and gpu_check_machine.py.
"""
from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

REPO = Path(__file__).resolve().parents[1]
# The check runs from the checkout and installs it as it goes: the running interpreter cannot
# see an install made after it started, so it imports fcn_edge from here; the install section
# checks the installed package in a fresh interpreter.
sys.path.insert(0, str(REPO))

from fcn_edge.bench.timing import summarize  # noqa: E402
from fcn_edge.io import atomic_path  # noqa: E402

DEFAULT_BUDGET_S = 480.0
GOAL_FPS, GOAL_SIZE = 1000.0, "512x256"


class SkipSection(Exception):
    """Raised by a section that cannot run here; the message is the reason."""


class OverBudget(BaseException):
    """Raised by the alarm when a section outlives its budget. A BaseException, so that the
    ``except Exception`` around single measurements cannot swallow it."""


@dataclass(frozen=True)
class Context:
    device: str                   # where latency, training and parity run: "cuda" or "cpu"
    cuda: bool                    # whether a CUDA device is usable in this process
    quick: bool = False           # tiny sizes and few iterations: the flow, not the figures
    install: bool = True          # False: check the import only (tests must not touch the venv)
    deadline: float = math.inf    # time.monotonic() by which the running section must end
    save: Callable[[], None] = field(default=lambda: None, repr=False)  # rewrite the JSON now

    def left(self) -> float:
        return self.deadline - time.monotonic()


@dataclass(frozen=True)
class Section:
    name: str
    run: Callable[[Context, dict], None]  # fills the dict with its figures as it goes
    cap_s: float                          # its cap out of the default 480 s, scaled with it
    needs: str = "nothing"                # "cuda": a CUDA GPU; "device": the --device one


# --- the runner ---------------------------------------------------------------------------------

def run_sections(sections: list[Section], ctx: Context, budget_s: float,
                 records: dict[str, dict]) -> None:
    """Run ``sections`` in order, each on min(its scaled cap, what is left of ``budget_s``),
    each recorded in ``records[name]``; the JSON is saved before and after each."""
    start, scale = time.monotonic(), budget_s / DEFAULT_BUDGET_S
    for section in sections:
        record = records.setdefault(section.name, {"status": "pending"})
        left = budget_s - (time.monotonic() - start)
        reason = _skip_reason(section, ctx, left, budget_s)
        if reason:
            record.update(status="skipped", reason=reason)
        else:
            budget = min(section.cap_s * scale, left)
            record.update(status="running", budget_s=round(budget, 1))
            ctx.save()
            _run_one(section, replace(ctx, deadline=time.monotonic() + budget), record, budget)
        ctx.save()
        # Progress as it goes: if the run is killed, the output's tail says how far it got.
        print(f"[gpu_check] {section.name}: {record['status']} ({record.get('wall_s', 0)} s)",
              flush=True)


def _skip_reason(section: Section, ctx: Context, left: float, budget_s: float) -> str | None:
    if left < 1.0:
        return f"the total budget of {budget_s:.0f} s is spent"
    if section.needs == "cuda" and not ctx.cuda:
        return "no CUDA device"
    if section.needs == "device" and ctx.device == "cuda" and not ctx.cuda:
        return "no CUDA device (--device cpu --quick runs this flow on the CPU)"
    return None


def _run_one(section: Section, ctx: Context, record: dict, budget: float) -> None:
    start = time.monotonic()
    try:
        with hard_limit(budget + min(30.0, max(0.1, 0.25 * budget))):
            section.run(ctx, record)
        record["status"] = "ok"
    except SkipSection as exc:
        record.update(status="skipped", reason=str(exc))
    except OverBudget:
        record.update(status="failed", error=f"stopped: over its budget of {budget:.1f} s")
    except Exception as exc:  # one section's failure is recorded, never the end of the run
        record.update(status="failed", error=one_line(exc))
    wall = time.monotonic() - start
    record.update(wall_s=round(wall, 2), over_budget=wall > budget)


@contextmanager
def hard_limit(seconds: float) -> Iterator[None]:
    """Raise OverBudget in this thread after ``seconds`` (a SIGALRM timer: main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise OverBudget()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def attempt(ctx: Context, results: dict, key: str, measure: Callable[[], dict]) -> None:
    """One measurement of a section: its figures, or its error, under ``results[key]``."""
    if ctx.left() <= 0:
        results[key] = {"status": "skipped", "reason": "the section's budget is spent"}
        return
    try:
        results[key] = measure()
    except Exception as exc:
        results[key] = {"error": one_line(exc)}
    ctx.save()


def raise_failures(results: dict) -> None:
    """Fail the section (its other figures kept) when any of its measurements failed."""
    failed = [f"{key}: {r['error']}" for key, r in results.items() if "error" in r]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(results)} failed; first {failed[0]}")


def one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def write_report(path: Path, report: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")


# --- statistics ---------------------------------------------------------------------------------

def time_calls(step: Callable[[int], Any], ctx: Context, iters: int, warmup: int) -> list[float]:
    """Milliseconds of each of up to ``iters`` calls after ``warmup``; fewer when the
    section's deadline comes first (never fewer than one)."""
    for i in range(warmup):
        step(i)
    if ctx.device != "cuda":
        samples = []
        for i in range(iters):
            start = time.perf_counter()
            step(i)
            samples.append((time.perf_counter() - start) * 1e3)
            if ctx.left() < 0:
                break
        return samples
    events = []
    for i in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step(i)
        end.record()
        events.append((start, end))
        if ctx.left() < 0:
            break
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in events]


def figures(samples_ms: list[float]) -> dict:
    """p50, nearest-rank p99 and mean in ms, and FPS = 1000 / p50."""
    t = summarize(samples_ms)
    return {"p50_ms": round(t.p50, 4), "p99_ms": round(t.p99, 4), "mean_ms": round(t.mean, 4),
            "fps": round(t.fps, 1), "runs": t.runs}


def label_agreement(labels: torch.Tensor, reference: torch.Tensor) -> float:
    """The fraction of equal labels; refused when the reference is one class everywhere
    (then any path that outputs that class would agree)."""
    if reference.unique().numel() < 2:
        raise RuntimeError("the fp32 labels are one class everywhere: agreement means nothing")
    return float((labels == reference).float().mean())


def goal_check(results: dict) -> dict:
    """Whether the fastest fp16 mode at 512x256 reaches GOAL_FPS."""
    goal = {"goal_fps": GOAL_FPS, "size": f"{GOAL_SIZE} (W×H)", "precision": "fp16"}
    timed = {k: r for k, r in results.items() if k.startswith(f"{GOAL_SIZE} fp16") and "fps" in r}
    if not timed:
        return goal | {"meets_goal": None, "reason": f"no fp16 figure at {GOAL_SIZE}"}
    best = max(timed, key=lambda k: timed[k]["fps"])
    return goal | {"best": best, "fps": timed[best]["fps"],
                   "meets_goal": timed[best]["fps"] >= GOAL_FPS}
