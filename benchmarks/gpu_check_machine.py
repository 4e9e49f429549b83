"""The sections of benchmarks/gpu_check.py that check the machine rather than the network:
``install`` (the checkout over the machine's PyTorch, imported in a fresh interpreter, and the
versions found), ``cuda_buffers`` (a round trip through the TensorRT backend's pinned CUDA
buffers) and ``pytest_gpu`` (the suite's ``gpu`` tests). The runner is gpu_check_runner.py.
"""
from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from gpu_check_models import torchvision_models
from gpu_check_runner import REPO, Context, attempt, raise_failures


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
    out["torchvision_import"] = torchvision_models()[1] or "ok"
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
