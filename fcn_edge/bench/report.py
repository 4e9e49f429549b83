"""The bench's table, CSV and JSON (and the profile's text); files are written atomically."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, fields
from pathlib import Path

from ..io import atomic_path
from .profile import format_profiles
from .runner import BenchReport, BenchRow

COLUMNS = [  # (header, width, BenchRow field or a function of the row)
    ("backend", 20, "backend"), ("prec", 4, "precision"), ("io", 5, "io"),
    ("size", 9, "size"), ("status", 11, "status"), ("MB", 6, "artifact_mb"),
    ("model ms p50/p99", 16, lambda r: _pair(r.model_p50_ms, r.model_p99_ms)),
    ("e2e ms p50/p99", 16, lambda r: _pair(r.e2e_p50_ms, r.e2e_p99_ms)),
    ("FPS", 7, "fps"), ("GFLOP/s", 7, "gflops_per_s"),
    ("×torch", 6, lambda r: _ratio(r.vs_torch)),
    ("mIoU", 6, "mean_iou"), ("ΔmIoU", 6, lambda r: _signed(r.delta_miou)),
    ("agree %", 7, lambda r: None if r.agreement is None else f"{r.agreement * 100:.2f}"),
    ("check", 5, "check"),
]
#: With a baseline, after ×torch: the baseline's e2e median over the row's.
BASELINE_COLUMN = ("×base", 5, lambda r: _ratio(r.vs_baseline))


def format_table(report: BenchReport) -> str:
    """The table as text (the baseline's rows under their own heading), then one numbered
    note per row with a reason, then the setting."""
    columns = list(COLUMNS)
    if report.baseline:
        columns.insert(next(i for i, c in enumerate(columns) if c[0] == "×torch") + 1,
                       BASELINE_COLUMN)
    lines = ["  ".join(f"{h:<{w}}" for h, w, _ in columns).rstrip()]
    notes: list[str] = []
    lines += _row_lines(report.rows, columns, notes)
    if report.baseline:
        lines.append(f"baseline {report.baseline}:")
        lines += _row_lines(report.baseline_rows, columns, notes)
    lines += [f"[{i}] {text}" for i, text in enumerate(notes, 1)]
    reasons: dict[str, list[str]] = {}
    for what, why in report.not_run:
        reasons.setdefault(why, []).append(what)
    lines += [f"not run: {', '.join(whats)}: {why}" for why, whats in reasons.items()]
    lines += _setting(report)
    return "\n".join(lines)


def _row_lines(rows: list[BenchRow], columns: list, notes: list[str]) -> list[str]:
    """One line per row; a row's reason becomes a numbered note (``notes``, shared)."""
    lines = []
    for row in rows:
        cells = []
        for _, width, get in columns:
            value = get(row) if callable(get) else getattr(row, get)
            cells.append(f"{_cell(value):<{width}}")
        line = "  ".join(cells).rstrip()
        if row.reason:
            if row.reason not in notes:
                notes.append(row.reason)
            line += f"  [{notes.index(row.reason) + 1}]"
        lines.append(line)
    return lines


def to_csv(report: BenchReport) -> str:
    """One line per row; with a baseline, its rows follow, ``model`` saying whose a row is."""
    out = io.StringIO()
    names = [f.name for f in fields(BenchRow)]
    writer = csv.DictWriter(out, names + ["model"] if report.baseline else names,
                            lineterminator="\n")
    writer.writeheader()
    for model, rows in (("model", report.rows), ("baseline", report.baseline_rows)):
        for row in rows:
            writer.writerow({**asdict(row), "model": model} if report.baseline else asdict(row))
    return out.getvalue()


def to_json(report: BenchReport) -> str:
    return json.dumps({"fcn_edge_bench": asdict(report)}, indent=2, ensure_ascii=False)


def write_report(report: BenchReport, out_dir: str | Path) -> dict[str, Path]:
    """``bench.txt``, ``bench.csv`` and ``bench.json`` in ``out_dir`` (and
    ``bench_profile.txt`` when rows were profiled), each written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    files = [("bench.txt", format_table(report)), ("bench.csv", to_csv(report)),
             ("bench.json", to_json(report))]
    if report.profiles:
        files.append(("bench_profile.txt", profile_text(report)))
    for name, text in files:
        with atomic_path(out / name) as tmp:
            tmp.write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
        written[name] = out / name
    return written


def profile_text(report: BenchReport) -> str:
    """The profiles of the rows, set against the sgemm ceiling when it was measured."""
    return format_profiles(report.profiles, report.machine.get("sgemm_gflops"))


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
    if report.baseline:
        theirs = ", ".join(f"{size}: {value:.1f}" for size, value in
                           report.baseline_gflops.items() if value)
        lines.append(f"baseline: {report.baseline}, run through the same rows, timed "
                     f"interleaved with the model's; ×base = its e2e median / the row's"
                     + (f"; GFLOPs per inference {theirs}" if theirs else ""))
    lines.append("reference: " + (f"{report.reference} in PyTorch fp32 on the CPU"
                                  if report.reference else
                                  "none (pass --reference CHECKPOINT for ΔmIoU and agreement)"))
    lines += [f"data: {d}" for d in dict.fromkeys(report.eval_data)]
    return lines


def _pair(a, b) -> str | None:
    return None if a is None else f"{_cell(a)}/{_cell(b)}"


def _signed(value) -> str | None:
    return None if value is None else f"{value:+.2f}"


def _ratio(value: float | None) -> str | None:
    """A speed ratio with two decimals, below 1 too (0.59×, not the 0.5900 of a mean IU)."""
    return None if value is None else f"{value:.2f}"


def _cell(value) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.1f}" if value >= 100 \
            else f"{value:.2f}"
    return str(value)
