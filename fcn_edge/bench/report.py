"""The bench's table, CSV and JSON; files are written atomically."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, fields
from pathlib import Path

from ..io import atomic_path
from .runner import BenchReport, BenchRow

COLUMNS = [  # (header, width, BenchRow field or a function of the row)
    ("backend", 20, "backend"), ("prec", 4, "precision"), ("io", 5, "io"),
    ("size", 9, "size"), ("status", 11, "status"), ("MB", 6, "artifact_mb"),
    ("model ms p50/p99", 16, lambda r: _pair(r.model_p50_ms, r.model_p99_ms)),
    ("e2e ms p50/p99", 16, lambda r: _pair(r.e2e_p50_ms, r.e2e_p99_ms)),
    ("FPS", 7, "fps"), ("GFLOP/s", 7, "gflops_per_s"), ("×torch", 6, "vs_torch"),
    ("mIoU", 6, "mean_iou"), ("ΔmIoU", 6, lambda r: _signed(r.delta_miou)),
    ("agree %", 7, lambda r: None if r.agreement is None else f"{r.agreement * 100:.2f}"),
    ("check", 5, "check"),
]


def format_table(report: BenchReport) -> str:
    """The table as text, then one numbered note per row with a reason, then the setting."""
    lines = ["  ".join(f"{h:<{w}}" for h, w, _ in COLUMNS).rstrip()]
    notes: list[str] = []
    for row in report.rows:
        cells = []
        for _, width, get in COLUMNS:
            value = get(row) if callable(get) else getattr(row, get)
            cells.append(f"{_cell(value):<{width}}")
        line = "  ".join(cells).rstrip()
        if row.reason:
            if row.reason not in notes:
                notes.append(row.reason)
            line += f"  [{notes.index(row.reason) + 1}]"
        lines.append(line)
    lines += [f"[{i}] {text}" for i, text in enumerate(notes, 1)]
    reasons: dict[str, list[str]] = {}
    for what, why in report.not_run:
        reasons.setdefault(why, []).append(what)
    lines += [f"not run: {', '.join(whats)}: {why}" for why, whats in reasons.items()]
    lines += _setting(report)
    return "\n".join(lines)


def to_csv(report: BenchReport) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, [f.name for f in fields(BenchRow)], lineterminator="\n")
    writer.writeheader()
    for row in report.rows:
        writer.writerow(asdict(row))
    return out.getvalue()


def to_json(report: BenchReport) -> str:
    return json.dumps({"fcn_edge_bench": asdict(report)}, indent=2, ensure_ascii=False)


def write_report(report: BenchReport, out_dir: str | Path) -> dict[str, Path]:
    """``bench.txt``, ``bench.csv`` and ``bench.json`` in ``out_dir``, each written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, text in (("bench.txt", format_table(report)), ("bench.csv", to_csv(report)),
                       ("bench.json", to_json(report))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
        written[name] = out / name
    return written


def _setting(report: BenchReport) -> list[str]:
    m = report.machine
    lines = [f"machine: {m.get('processor')}, {m.get('cpus')} CPUs, {m.get('threads')} threads "
             f"for every CPU backend; fcn-edge {m.get('fcn_edge')}, {m.get('date')}"]
    if "sgemm_gflops" in m:
        lines.append(f"sgemm ceiling on {m.get('threads')} threads: {m['sgemm_gflops']} GFLOP/s "
                     f"(model GFLOP/s above is achieved arithmetic at the model-only median)")
    gflops = ", ".join(f"{size}: {value:.1f}" for size, value in report.model_gflops.items()
                       if value)
    if gflops:
        lines.append(f"model GFLOPs per inference: {gflops}")
    lines.append("reference: " + (f"{report.reference} in PyTorch fp32 on the CPU"
                                  if report.reference else
                                  "none (pass --reference CHECKPOINT for ΔmIoU and agreement)"))
    lines += [f"data: {d}" for d in dict.fromkeys(report.eval_data)]
    return lines


def _pair(a, b) -> str | None:
    return None if a is None else f"{_cell(a)}/{_cell(b)}"


def _signed(value) -> str | None:
    return None if value is None else f"{value:+.2f}"


def _cell(value) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.1f}" if value >= 100 \
            else f"{value:.2f}"
    return str(value)
