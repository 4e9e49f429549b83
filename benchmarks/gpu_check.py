"""One prepared check for the rare minutes a GPU is at hand: install, latency, training
throughput, the TensorRT backend's CUDA buffers, torchvision parity, the TensorRT build's accuracy
gate (PyTorch fp16 in the engine's place) and the GPU tests, in one JSON.

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py [--out PATH] [--budget-seconds 480]
        [--sections install,latency,...] [--device cuda|cpu] [--quick] [--no-install]

Every section runs on its own share of the budget, records ``status`` (ok, failed with a
one-line error, skipped with the reason) and its wall seconds, and never stops the others. The
JSON (default ``$OUT/gpu_check.json``, else ``gpu_check.json``) is replaced atomically before
and after every section and after every measurement, so a run killed at its time limit still
leaves what it measured. ``--device cpu --quick`` runs the whole flow on a CPU at tiny sizes.
Sizes are W×H (width × height) throughout, unlike ``fcn-edge``'s H×W ``--size`` options (but
the gate's profile, which is an ONNX's ``--shapes``: N×H×W).

This file is the command: its arguments, the SECTIONS it runs and the table printed last. The
runner, budgets and statistics are in gpu_check_runner.py; the sections that run the network on
the device (latency, training, torchvision_parity) in gpu_check_models.py, those that check the
machine (install, cuda_buffers, pytest_gpu) in gpu_check_machine.py, the accuracy gate (gate) in
gpu_check_gate.py. Python puts this folder first on ``sys.path`` when it runs this file, so they
import each other by name.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from gpu_check_gate import gate
from gpu_check_machine import cuda_buffers, install, pytest_gpu
from gpu_check_models import SIZE_CONVENTION, latency, torchvision_parity, training
from gpu_check_runner import DEFAULT_BUDGET_S, Context, Section, run_sections, write_report

# After the gpu_check modules: gpu_check_runner puts the checkout first on sys.path.
from fcn_edge.errors import InputError

# --- the sections, in run order -----------------------------------------------------------------

SECTIONS = {s.name: s for s in (
    Section("install", install, 60),
    Section("latency", latency, 90, needs="device"),
    Section("training", training, 90, needs="device"),
    Section("cuda_buffers", cuda_buffers, 30, needs="cuda"),
    Section("torchvision_parity", torchvision_parity, 60, needs="device"),
    Section("gate", gate, 60, needs="device"),
    Section("pytest_gpu", pytest_gpu, 240, needs="cuda"),
)}


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
    if "min_agreement" in m:  # the accuracy gate's header figures
        worst = min((c["agreement"] for c in m["checks"]), default=float("nan"))
        nan_inf = sum(c["nan"] + c["inf"] for c in m["checks"])
        return (f"passed {m['passed']}  {m['precision']}: worst agreement {worst:.4%} "
                f"(≥ {m['min_agreement']:.2%}), NaN+Inf {nan_inf}, {len(m['checks'])} checks")
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
