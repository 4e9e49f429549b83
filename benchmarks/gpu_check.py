"""One prepared check for the rare minutes a GPU is at hand: install, latency, training
throughput, the TensorRT backend's CUDA buffers, torchvision parity and the GPU tests, in one JSON.

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py [--out PATH] [--budget-seconds 480]
        [--sections install,latency,...] [--device cuda|cpu] [--quick] [--no-install]

Every section runs on its own share of the budget, records ``status`` (ok, failed with a
one-line error, skipped with the reason) and its wall seconds, and never stops the others. The
JSON (default ``$OUT/gpu_check.json``, else ``gpu_check.json``) is replaced atomically before
and after every section and after every measurement, so a run killed at its time limit still
leaves what it measured. ``--device cpu --quick`` runs the whole flow on a CPU at tiny sizes.
Sizes are W×H (width × height) throughout, unlike ``fcn-edge``'s H×W ``--size`` options.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
# The check runs from the checkout and installs it as it goes: the running interpreter cannot
# see an install made after it started, so it imports fcn_edge from here; the install section
# checks the installed package in a fresh interpreter.
sys.path.insert(0, str(REPO))

from fcn_edge.bench.timing import summarize  # noqa: E402
from fcn_edge.errors import InputError  # noqa: E402
from fcn_edge.io import atomic_path  # noqa: E402

DEFAULT_BUDGET_S = 480.0
SIZE_CONVENTION = ("sizes are W×H (width × height): 512x256 is 512 pixels wide and 256 high, "
                   "an input tensor of 1×3×256×512 (N×C×H×W)")
LATENCY_SIZES, QUICK_SIZES = ((512, 256), (1024, 512)), ((64, 32), (96, 64))
GOAL_FPS, GOAL_SIZE = 1000.0, "512x256"
MIN_AGREEMENT = 0.98     # fp16 rounding flips a few near-tie pixels, a broken path flips most
PARITY_TOLERANCE = 1e-3  # max |Δ| over max |reference|; float32 with TF32 off lands near 1e-6
ROTATE = 4               # distinct random inputs cycled through, so no run times one cached input


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


def figures(samples_ms: list[float]) -> dict:
    """p50, nearest-rank p99 and mean in ms, and FPS = 1000 / p50."""
    t = summarize(samples_ms)
    return {"p50_ms": round(t.p50, 4), "p99_ms": round(t.p99, 4), "mean_ms": round(t.mean, 4),
            "fps": round(t.fps, 1), "runs": t.runs}


def parse_sections(text: str | None) -> list[str]:
    """The named sections in run order (install first, the GPU tests last), or all of them."""
    if not text:
        return list(SECTIONS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise InputError(f"unknown section(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(SECTIONS)}")
    return [n for n in SECTIONS if n in names]


def write_report(path: Path, report: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")


# --- install ------------------------------------------------------------------------------------

def install(ctx: Context, record: dict) -> None:
    """pip-install the checkout over the machine's PyTorch (no deps, no index, no isolation:
    that machine has no network), then import it in a fresh interpreter; record versions."""
    torch_before = _dist_version("torch")
    if ctx.install:
        command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                   "--no-index", "-e", str(REPO)]
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=max(1.0, ctx.left()))
        record["pip"] = {"command": " ".join(command[1:]), "rc": done.returncode,
                         "tail": (done.stdout + done.stderr).strip().splitlines()[-3:]}
        if done.returncode:
            raise RuntimeError(f"pip install failed (rc {done.returncode}): "
                               f"{(record['pip']['tail'] or ['?'])[-1]}")
    else:
        record["pip"] = "not run (--no-install): only the import is checked"
    probe = "import fcn_edge; print(fcn_edge.__version__); print(fcn_edge.__file__)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=tempfile.gettempdir(), timeout=max(1.0, ctx.left()))
    if done.returncode:
        raise RuntimeError(f"import fcn_edge failed in a fresh interpreter: "
                           f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
    version, where = done.stdout.splitlines()[:2]
    record["fcn_edge"] = {"version": version, "file": where,
                          "from_checkout": Path(where).resolve().is_relative_to(REPO)}
    record["torch_untouched"] = _dist_version("torch") == torch_before
    record["versions"] = versions()
    if not record["torch_untouched"]:
        raise RuntimeError(f"the install changed torch: {torch_before} → "
                           f"{_dist_version('torch')}")


def versions() -> dict:
    out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "torch_cuda": torch.version.cuda,
                           "cudnn": torch.backends.cudnn.version()}
    for dist in ("torchvision", "onnx", "onnxruntime", "cuda-bindings", "cupy-cuda13x", "numpy"):
        out[dist] = _dist_version(dist)
    out["torchvision_import"] = _torchvision()[1] or "ok"
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        out["driver"] = _nvidia_smi("driver_version")
    return out


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _nvidia_smi(query: str) -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=20)
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else None


def _torchvision() -> tuple[Any, str | None]:
    """(torchvision.models, None), or (None, why it does not import)."""
    try:
        import torchvision.models as models
    except Exception as exc:  # missing, or built for another torch (RuntimeError, OSError)
        return None, one_line(exc)
    return models, None


# --- latency ------------------------------------------------------------------------------------

MODES = ("fp32", "fp16", "fp16+graph")


def latency(ctx: Context, record: dict) -> None:
    """Batch-1 PyTorch inference of FCN-8s ResNet18 at each size and mode, timed per call with
    CUDA events after a warm-up, each mode's labels checked against fp32's before it is timed."""
    import copy

    cuda = ctx.device == "cuda"
    torch.manual_seed(0)
    model = _random_scores(_create("resnet18")).to(ctx.device).eval()
    half = copy.deepcopy(model).half() if cuda else None
    iters, warmup = (5, 2) if ctx.quick else (300, 25)
    record.update(device=ctx.device, model="fcn8s resnet18, 21 classes, eval", batch=1,
                  size_convention=SIZE_CONVENTION,
                  fp16="weights and input cast with .half() (no autocast)",
                  graph="fp16 model captured once in a torch.cuda.CUDAGraph on static buffers; "
                        "each call copies its input in and replays",
                  timing=("CUDA events around every call" if cuda else "host clock per call")
                  + f", {warmup} warm-up then up to {iters} calls; {ROTATE} random inputs cycled",
                  cudnn_benchmark=cuda, tf32_convolutions=torch.backends.cudnn.allow_tf32)
    results = record.setdefault("results", {})
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cuda  # fixed shapes: let cuDNN pick its fastest kernels
    try:
        with torch.no_grad():
            for w, h in QUICK_SIZES if ctx.quick else LATENCY_SIZES:
                inputs = [torch.randn(1, 3, h, w, device=ctx.device) for _ in range(ROTATE)]
                for mode in MODES if cuda else MODES[:1]:
                    attempt(ctx, results, f"{w}x{h} {mode}", lambda: _latency_run(
                        ctx, mode, model, half, inputs, iters, warmup) | {"width": w, "height": h})
                if not cuda:
                    for mode in MODES[1:]:
                        results[f"{w}x{h} {mode}"] = {"status": "skipped", "reason": "CUDA only"}
    finally:
        torch.backends.cudnn.benchmark = previous
    record["goal"] = goal_check(results)
    raise_failures(results)


def _latency_run(ctx, mode, model, half, inputs, iters, warmup) -> dict:
    step, labels = _latency_step(mode, model, half, inputs)
    x = torch.randn_like(inputs[0])  # one more fresh input, for the labels only
    agreement = label_agreement(labels(x), model(x).argmax(1))
    if agreement < MIN_AGREEMENT:
        raise RuntimeError(f"labels agree with fp32's on only {agreement:.3f} of the pixels "
                           f"(< {MIN_AGREEMENT}): not timed")
    samples = time_calls(step, ctx, iters, warmup)
    return {"mode": mode, "agreement": round(agreement, 5), **figures(samples)}


def _latency_step(mode, model, half, inputs):
    """(step(i): inference on input i, labels(x): the mode's labels for a new x)."""
    if mode == "fp32":
        return (lambda i: model(inputs[i % ROTATE])), (lambda x: model(x).argmax(1))
    xs = [x.half() for x in inputs]
    if mode == "fp16":
        return (lambda i: half(xs[i % ROTATE])), (lambda x: half(x.half()).argmax(1))
    graph, static_in, static_out = _capture(half, xs[0])

    def step(i: int) -> None:
        static_in.copy_(xs[i % ROTATE])
        graph.replay()

    def labels(x: torch.Tensor) -> torch.Tensor:
        static_in.copy_(x.half())
        static_out.fill_(math.nan)  # poisoned: a replay that skips an element shows
        graph.replay()
        if not torch.isfinite(static_out).all():
            raise RuntimeError("the graph replay left non-finite outputs")
        return static_out.argmax(1)

    return step, labels


def _capture(model, example):
    """A CUDA graph of ``model`` on a static copy of ``example`` (warmed up on a side stream,
    as capture requires), with its static input and output."""
    static_in = example.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = model(static_in)
    return graph, static_in, static_out


def label_agreement(labels: torch.Tensor, reference: torch.Tensor) -> float:
    """The fraction of equal labels; refused when the reference is one class everywhere
    (then any path that outputs that class would agree)."""
    if reference.unique().numel() < 2:
        raise RuntimeError("the fp32 labels are one class everywhere: agreement means nothing")
    return float((labels == reference).float().mean())


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


def goal_check(results: dict) -> dict:
    """Whether the fastest fp16 mode at 512x256 reaches GOAL_FPS."""
    goal = {"goal_fps": GOAL_FPS, "size": f"{GOAL_SIZE} (W×H)", "precision": "fp16"}
    timed = {k: r for k, r in results.items() if k.startswith(f"{GOAL_SIZE} fp16") and "fps" in r}
    if not timed:
        return goal | {"meets_goal": None, "reason": f"no fp16 figure at {GOAL_SIZE}"}
    best = max(timed, key=lambda k: timed[k]["fps"])
    return goal | {"best": best, "fps": timed[best]["fps"],
                   "meets_goal": timed[best]["fps"] >= GOAL_FPS}


def _create(backbone: str, weights: Path | None = None):
    from fcn_edge.models import create_model

    return create_model("fcn8s", num_classes=21, backbone=backbone, weights=weights)


def _random_scores(model):
    """Score layers start at zero (paper §4.2): every label would be 0. Draw them instead."""
    with torch.no_grad():
        for key, param in model.named_parameters():
            if key.startswith("score"):
                param.normal_(0, 0.05) if param.ndim > 1 else param.zero_()
    return model


# --- training -----------------------------------------------------------------------------------

def training(ctx: Context, record: dict) -> None:
    """Images/s of FCN-8s VGG16 and ResNet18 training steps as fcn_edge.train's loop takes
    them on CUDA (fp16 autocast + GradScaler, channels_last, the paper's SGD), on random data."""
    cuda = ctx.device == "cuda"
    size, batch, warmup, steps = (64, 2, 1, 1) if ctx.quick else (500, 8, 5, 20)
    record.update(device=ctx.device, size=f"{size}x{size}", batch=batch, warmup_steps=warmup,
                  amp="fp16 autocast + GradScaler, channels_last" if cuda else "none (fp32)",
                  loss="fcn_edge.train.loss.pixel_loss, mean over counted pixels (paper recipe)",
                  optimizer="fcn_edge.train.optim.make_optimizer: SGD, momentum 0.9",
                  data="random images, random labels with 5% ignored (255)",
                  timing="synchronised host clock around each step; images/s = batch / p50")
    results = record.setdefault("results", {})
    # --quick leaves VGG16 out: its 120 M parameters cost seconds per CPU step, its code path
    # is ResNet18's.
    for backbone in ("resnet18",) if ctx.quick else ("vgg16", "resnet18"):
        attempt(ctx, results, backbone,
                lambda: _train_rate(ctx, backbone, size, batch, warmup, steps))
        if cuda:
            torch.cuda.empty_cache()
    raise_failures(results)


def _train_rate(ctx, backbone, size, batch, warmup, steps) -> dict:
    from fcn_edge.config import TrainConfig
    from fcn_edge.train.loss import pixel_loss
    from fcn_edge.train.optim import make_optimizer

    cuda = ctx.device == "cuda"
    torch.manual_seed(0)
    model = _create(backbone).to(ctx.device).train()
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats()
    optimizer = make_optimizer(model, TrainConfig(model=model.config))
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    batches = [_random_batch(batch, size, ctx.device) for _ in range(2)]

    def step(i: int) -> torch.Tensor:
        x, y = batches[i % 2]
        with torch.autocast(ctx.device, dtype=torch.float16, enabled=cuda):
            logits = model(x)
        loss = pixel_loss(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    for i in range(warmup):
        step(i)
    samples, loss = [], None
    for i in range(steps):
        _sync(cuda)
        start = time.perf_counter()
        loss = step(i)
        _sync(cuda)
        samples.append((time.perf_counter() - start) * 1e3)
        if ctx.left() < 0:
            break
    if not torch.isfinite(loss):
        raise RuntimeError(f"the loss is {float(loss)} after {warmup + len(samples)} steps")
    timing = figures(samples)
    out = {"images_per_s": round(batch * 1000.0 / timing["p50_ms"], 2),
           "step_p50_ms": timing["p50_ms"], "steps": timing["runs"], "loss": float(loss.detach())}
    if cuda:
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def _random_batch(batch: int, size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, 3, size, size, device=device)
    if device == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 21, (batch, size, size), device=device)
    y[torch.rand(y.shape, device=device) < 0.05] = 255
    return x, y


def _sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


# --- CUDA buffers of the TensorRT backend -------------------------------------------------------

def cuda_buffers(ctx: Context, record: dict) -> None:
    """A host → device → device → host round trip through fcn_edge.runtime.backends.cuda's
    pinned buffers: random bytes in A's pinned memory, htod A, A → B on the device, dtoh B,
    bytes compared; each copy timed alone (synchronised host clock) for GB/s."""
    from fcn_edge.runtime.backends.cuda import _open_cuda

    cuda = _open_cuda(0)
    copy, how = _device_copier()
    sizes, rounds = ((1 << 20, 4 << 20), 2) if ctx.quick else ((1 << 20, 64 << 20), 5)
    record.update(binding=type(cuda).__name__, device_copy=how, rounds=rounds,
                  gb_s="bytes copied / p50 seconds (a device copy reads and writes: twice that "
                       "moves through memory); one warm-up round first")
    results = record.setdefault("results", {})
    with cuda.active():
        stream = cuda.stream()
        try:
            for nbytes in sizes:
                attempt(ctx, results, f"{nbytes >> 20} MiB",
                        lambda: _round_trip(cuda, copy, stream, nbytes, rounds))
        finally:
            cuda.destroy_stream(stream)
    raise_failures(results)


def _round_trip(cuda, copy, stream, nbytes: int, rounds: int) -> dict:
    rng = np.random.default_rng(nbytes)
    a, b = cuda.alloc(nbytes, "a"), None
    try:
        b = cuda.alloc(nbytes, "b")
        legs = {"htod": lambda: cuda.htod(a, nbytes, stream),
                "d2d": lambda: copy(b.device, a.device, nbytes, cuda.handle(stream)),
                "dtoh": lambda: cuda.dtoh(b, nbytes, stream)}
        times: dict[str, list[float]] = {leg: [] for leg in legs}
        for r in range(rounds + 1):  # round 0 warms up
            data = rng.integers(0, 256, nbytes, dtype=np.uint8)
            a.host[:nbytes] = data
            b.host[:nbytes] = ~data  # poisoned: bytes B never received cannot match
            for leg, run in legs.items():
                start = time.perf_counter()
                run()
                cuda.sync(stream)
                if r:
                    times[leg].append(time.perf_counter() - start)
            if not np.array_equal(b.host[:nbytes], data):
                raise RuntimeError(f"round {r}: {int((b.host[:nbytes] != data).sum())} of "
                                   f"{nbytes} bytes came back different")
        return {"bytes_equal": True, **{f"{leg}_gb_s": round(nbytes / float(np.median(t)) / 1e9, 2)
                                        for leg, t in times.items()}}
    finally:
        for buffer in (a, b):
            if buffer is not None:
                cuda.free(buffer)


def _device_copier() -> tuple[Callable[[int, int, int, int], None], str]:
    """copy(dst, src, nbytes, stream_handle) on the device: cuda-python's runtime, else CuPy."""
    try:
        from cuda.bindings import runtime as rt
    except ImportError:
        try:
            from cuda import cudart as rt
        except ImportError:
            rt = None
    if rt is not None:
        def copy(dst: int, src: int, nbytes: int, stream: int) -> None:
            kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
            err, *_ = rt.cudaMemcpyAsync(dst, src, nbytes, kind, stream)
            if err != rt.cudaError_t.cudaSuccess:
                raise RuntimeError(f"cudaMemcpyAsync device to device failed: {err}")
        return copy, "cuda-python cudaMemcpyAsync(DeviceToDevice)"
    import cupy

    return (lambda dst, src, nbytes, stream: cupy.cuda.runtime.memcpyAsync(
        dst, src, nbytes, cupy.cuda.runtime.memcpyDeviceToDevice, stream)), "cupy memcpyAsync"


# --- torchvision parity -------------------------------------------------------------------------

#: backbone → (tap, our module, torchvision's module, compare our cell (p, p) where p is the
#: layer's padding: the cell whose window is the whole pool5 map, i.e. torchvision's fc6 Linear).
PARITY_TAPS = {
    "resnet18": (("layer2 (stride 8)", "layer2", "layer2", False),
                 ("layer3 (stride 16)", "layer3", "layer3", False),
                 ("layer4 (stride 32)", "layer4", "layer4", False)),
    "vgg16": (("pool3", "pool3", "features.16", False), ("pool4", "pool4", "features.23", False),
              ("pool5", "pool5", "features.30", False), ("fc6", "fc6", "classifier.0", True)),
    "alexnet": (("pool1", "features.2", "features.2", False),
                ("pool2", "features.5", "features.5", False),
                ("pool5", "features.12", "features.12", False),
                ("fc6", "fc6", "classifier.1", True)),
}


def torchvision_parity(ctx: Context, record: dict) -> None:
    """Our trunks against torchvision's modules under the same (random) weights, loaded into
    ours through fcn_edge's own weight loading as a user's ImageNet file would be."""
    models, why = _torchvision()
    if models is None:
        raise SkipSection(f"torchvision is not importable here ({why})")
    record.update(device=ctx.device, input="1×3×224×224 random normal (fc6 needs a 7×7 pool5)",
                  tolerance=PARITY_TOLERANCE, measure="max |Δ| / max |torchvision|",
                  tf32="off for the comparison")
    results = record.setdefault("results", {})
    backbones = ("resnet18",) if ctx.quick else tuple(PARITY_TAPS)
    with tempfile.TemporaryDirectory() as folder, _no_tf32():
        for backbone in backbones:
            attempt(ctx, results, backbone, lambda: _parity_one(
                getattr(models, backbone)(weights=None), backbone, Path(folder), ctx.device))
    raise_failures(results)


def _parity_one(reference, backbone: str, folder: Path, device: str) -> dict:
    ours = load_ours(reference, backbone, folder)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    taps = compare_taps(ours.to(device), reference.to(device), backbone, x.to(device))
    out = {"loaded_tensors": len(ours.load_report.loaded), "taps": taps}
    bad = [k for k, t in taps.items() if not t["ok"]]
    return out | {"error": f"differs from torchvision at {', '.join(bad)}"} if bad else out


def load_ours(reference: torch.nn.Module, backbone: str, folder: Path):
    """Our FCN-8s with ``reference``'s state dict (BatchNorm statistics drawn first, so eval
    mode uses them), written to a file and read back by fcn_edge's weight loading."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                for tensor, low, high in ((module.running_mean, -0.5, 0.5),
                                          (module.running_var, 0.5, 1.5),
                                          (module.weight, 0.5, 1.5), (module.bias, -0.5, 0.5)):
                    tensor.copy_(torch.empty(tensor.shape).uniform_(low, high, generator=gen))
    path = folder / f"{backbone}_classifier.pt"
    torch.save(reference.state_dict(), path)
    return _create(backbone, weights=path)


def compare_taps(ours, reference, backbone: str, x: torch.Tensor,
                 tolerance: float = PARITY_TOLERANCE) -> dict:
    """Run ``x`` through our trunk and the reference (both in eval mode), and compare the
    maps at each of PARITY_TAPS[backbone]."""
    ours.eval(), reference.eval()
    taps = PARITY_TAPS[backbone]
    with torch.no_grad():
        # The trunk alone: FCN.taps() may pad the input for coverage; torchvision never does.
        mine = _capture_outputs(ours, [t[1] for t in taps], lambda: ours._trunk(x))
        theirs = _capture_outputs(reference, [t[2] for t in taps], lambda: reference(x))
    layers = dict(ours.named_modules())
    out = {}
    for label, own, ref, cell in taps:
        a, b = mine[own], theirs[ref]
        if cell:
            p = layers[own].padding[0]
            a = a[:, :, p, p]
        if a.shape != b.shape:
            out[label] = {"ok": False, "shapes": [list(a.shape), list(b.shape)]}
            continue
        diff, scale = float((a - b).abs().max()), float(b.abs().max())
        rel = diff / max(scale, 1e-12)
        out[label] = {"ok": rel <= tolerance, "rel": rel, "max_abs_diff": diff,
                      "reference_scale": scale, "shape": list(b.shape)}
    return out


def _capture_outputs(model, names: list[str], run: Callable[[], Any]) -> dict[str, torch.Tensor]:
    """The outputs of ``model``'s modules ``names`` during ``run()``, copied as they are made
    (in-place ReLUs overwrite some of them afterwards)."""
    modules, outputs = dict(model.named_modules()), {}
    hooks = [modules[n].register_forward_hook(
        lambda module, args, output, n=n: outputs.__setitem__(n, output.detach().clone()))
        for n in names]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


@contextmanager
def _no_tf32() -> Iterator[None]:
    matmul, conv = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, conv


# --- the GPU tests ------------------------------------------------------------------------------

def pytest_gpu(ctx: Context, record: dict) -> None:
    """The suite's ``gpu`` tests. Last: the one section whose length cannot be foreseen takes
    what the others leave, up to its cap."""
    # A test module that fails to import there (a package that machine lacks) must not keep
    # the other modules' GPU tests from running: its error is counted instead.
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
               "--continue-on-collection-errors"]
    timeout = max(1.0, ctx.left() - 5.0)
    record["command"] = "python " + " ".join(command[1:])
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        text = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        record["output_tail"] = text.splitlines()[-30:]
        raise RuntimeError(f"pytest ran past {timeout:.0f} s and was stopped") from None
    record.update(rc=done.returncode, **pytest_summary(done.stdout))
    if done.returncode == 1:
        raise RuntimeError(f"{record['counts'].get('failed', 0)} failed, "
                           f"{record['counts'].get('errors', 0)} errors; first: "
                           f"{(record['failures'] or ['?'])[0]}")
    if done.returncode:
        record["output_tail"] = (done.stdout + done.stderr).splitlines()[-30:]
        raise RuntimeError(f"pytest exited with {done.returncode}")


def pytest_summary(text: str) -> dict:
    """Counts from pytest's last summary line, and the short summary's FAILED/ERROR and
    SKIPPED lines (``-ra`` is in the project's addopts)."""
    lines = text.splitlines()
    pattern = r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed|warnings?)\b"
    last = next((line for line in reversed(lines) if re.search(pattern, line)), "")
    counts = {}
    for number, what in re.findall(pattern, last):
        counts[{"error": "errors", "warning": "warnings"}.get(what, what)] = int(number)
    return {"counts": counts,
            "failures": [line for line in lines if line.startswith(("FAILED ", "ERROR "))][:20],
            "skips": [line for line in lines if line.startswith("SKIPPED ")][:20]}


SECTIONS = {s.name: s for s in (
    Section("install", install, 60),
    Section("latency", latency, 90, needs="device"),
    Section("training", training, 90, needs="device"),
    Section("cuda_buffers", cuda_buffers, 30, needs="cuda"),
    Section("torchvision_parity", torchvision_parity, 60, needs="device"),
    Section("pytest_gpu", pytest_gpu, 240, needs="cuda"),
)}


# --- the table and the command ------------------------------------------------------------------

def table(report: dict) -> list[str]:
    """The short table printed last (the device tool returns only the output's tail)."""
    lines = [f"gpu_check on {report['device']} ({report.get('gpu') or 'no GPU'}), "
             f"{report.get('wall_s', '?')} s; sizes W×H"]
    for name, r in report["sections"].items():
        note = r.get("error") or r.get("reason") or ""
        lines.append(f"{name:<19} {r['status']:<8} {r.get('wall_s', 0):>7.1f} s  {note}"[:160])
        for key, m in r.get("results", {}).items():
            lines.append(f"  {key:<24} " + _brief(m))
        if "goal" in r:
            g = r["goal"]
            lines.append(f"  goal {g['goal_fps']:.0f} fps at {g['size']} fp16: "
                         f"{g.get('best', '-')} {g.get('fps', '-')} fps, meets_goal "
                         f"{g['meets_goal']}")
        if "counts" in r:
            lines.append(f"  {r['counts']}")
    return lines


def _brief(m: dict) -> str:
    if "error" in m or "status" in m:
        return (m.get("error") or m.get("reason", ""))[:120]
    if "fps" in m:
        return (f"p50 {m['p50_ms']:.3f} ms  p99 {m['p99_ms']:.3f} ms  {m['fps']:.0f} fps  "
                f"agree {m['agreement']:.4f}")
    if "images_per_s" in m:
        return f"{m['images_per_s']:.1f} img/s  step {m['step_p50_ms']:.1f} ms"
    if "taps" in m:
        worst = max(t.get("rel", math.inf) for t in m["taps"].values())
        return f"{len(m['taps'])} taps, worst rel {worst:.2e}"
    return "  ".join(f"{k} {v}" for k, v in m.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="the JSON file (default $OUT/gpu_check.json, else "
                                      "./gpu_check.json)")
    parser.add_argument("--budget-seconds", type=float, default=DEFAULT_BUDGET_S)
    parser.add_argument("--sections", help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few iterations")
    parser.add_argument("--no-install", action="store_true",
                        help="install: check the import only, pip nothing")
    args = parser.parse_args(argv)
    try:
        names = parse_sections(args.sections)
        if args.budget_seconds <= 0:
            raise InputError(f"--budget-seconds must be positive, got {args.budget_seconds}")
    except InputError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT")
                            else "gpu_check.json"))
    cuda = torch.cuda.is_available()
    report = {"gpu_check": 1, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "argv": sys.argv[1:] if argv is None else argv, "device": args.device,
              "cuda_available": cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "quick": args.quick,
              "budget_s": args.budget_seconds, "size_convention": SIZE_CONVENTION,
              "sections": {name: {"status": "pending"} for name in names}, "finished": False}
    start = time.monotonic()
    ctx = Context(args.device, cuda, args.quick, not args.no_install,
                  save=lambda: write_report(out, report))
    ctx.save()
    run_sections([SECTIONS[n] for n in names], ctx, args.budget_seconds, report["sections"])
    report.update(finished=True, wall_s=round(time.monotonic() - start, 1))
    ctx.save()
    print("\n".join(table(report)) + f"\nJSON: {out}")
    return int(any(r["status"] == "failed" for r in report["sections"].values()))


if __name__ == "__main__":
    sys.exit(main())
