"""The demo's report: ``report.md`` beside its PNGs, readable on GitHub or any Markdown viewer."""
from __future__ import annotations

import platform
from datetime import date
from pathlib import Path

import numpy as np

from .. import __version__
from ..data import open_dataset
from ..io import Log, atomic_path
from ..runtime import Segmenter
from ..runtime.processing import colorize, overlay
from .media import overlay_grid, plot_curves
from .state import DemoConfig, DemoState


def report(config: DemoConfig, state: DemoState, log: Log) -> None:
    """The demo's last stage: ``report.md`` and its pictures in ``state.out``."""
    state.report = write_demo_report(config, state)


def write_demo_report(config: DemoConfig, state: DemoState) -> Path:
    """Write ``report.md``, ``training_curve.png`` and ``samples.png`` into ``state.out``."""
    out, model, row = state.out, state.run_model, state.run_row
    plot_curves(out / "training_curve.png", state.history)
    _samples(out / "samples.png", model, row.backend, config)
    lines = [f"# fcn-edge demo — {date.today().isoformat()}", "",
             f"FCN-8s {config.backbone} (paper §4.2) trained from scratch on procedural "
             f"scenes on {_machine(state.bench)}: {sizing_sentence(config, state)}; "
             f"fcn-edge {__version__}.", ""]
    lines += _timings(state.seconds)
    lines += _metrics(state.metrics, state.classes)
    lines += ["## Training", "", "![validation mean IU, pixel accuracy and loss per epoch]"
              "(training_curve.png)", ""]
    lines += [f"## Samples ({row.backend}, {row.precision}, `{model.name}`)", "",
              "![image, ground truth, prediction overlay](samples.png)", ""]
    lines += _bench(state.bench)
    lines += _run(state.run_stats, out)
    path = out / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sizing_sentence(config: DemoConfig, state: DemoState) -> str:
    """How much training there was and why: fixed work, or what fit ``--minutes`` here."""
    work = (f"{state.num_images} scenes of {config.image_size[0]}×{config.image_size[1]} × "
            f"{config.epochs} epochs, seed {config.seed}")
    busy = ", on one thread: the machine was busy" if state.train_threads == 1 else ""
    took = (f"{state.seconds.get('train', 0) / 60:.1f} min (estimated "
            f"{state.estimate_s / 60:.1f} min from {state.train_rate:.1f} images/s measured "
            f"at the start{busy})")
    if config.minutes is None:
        return f"{work}, a fixed amount of work, in {took}"
    return (f"{work}, sized to fit `--minutes {config.minutes:g}` at the speed measured at the "
            f"start, in {took}; with `--minutes` the scenes, and so the model's quality, follow "
            f"the machine's speed and load")


def _machine(bench_report) -> str:
    m = bench_report.machine
    return f"{m.get('processor') or platform.machine()} ({m.get('cpus')} CPUs)"


def _timings(seconds: dict) -> list[str]:
    if not seconds:
        return []
    cells = " | ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
    return [f"Stages: {cells}.", ""]


def _metrics(metrics, classes) -> list[str]:
    d = metrics.to_dict(classes)
    lines = ["## Evaluation (paper §5)", "", "| pixel acc. | mean acc. | mean IU | f.w. IU |",
             "| --- | --- | --- | --- |",
             "| " + " | ".join(_pct(d[k]) for k in ("pixel_accuracy", "mean_accuracy",
                                                    "mean_iou", "fw_iou")) + " |", "",
             "| class | IoU | accuracy |", "| --- | --- | --- |"]
    lines += [f"| {name} | {_pct(iou)} | {_pct(acc)} |"
              for name, iou, acc in zip(d["class_names"], d["iou"], d["accuracy"])]
    return lines + [""]


def _bench(report) -> list[str]:
    lines = ["## Benchmark (same input, same threads; reference: PyTorch fp32 on the CPU)", "",
             "| backend | precision | IO | size | model ms p50 | end-to-end ms p50 | FPS | "
             "×torch | mean IU | ΔmIoU (points) | agreement | check |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report.rows:
        if r.status != "ok":
            continue
        lines.append(f"| {r.backend} | {r.precision} | {r.io} | {r.size} | {_num(r.model_p50_ms)} "
                     f"| {_num(r.e2e_p50_ms)} | {_num(r.fps)} | {_num(r.vs_torch)} | "
                     f"{_num(r.mean_iou, 3)} | {_signed(r.delta_miou)} | "
                     f"{_pct(r.agreement, 2)} | {r.check or '—'} |")
    missing: dict[tuple[str, str, str], list[str]] = {}
    for r in report.rows:
        if r.status != "ok":
            missing.setdefault((r.backend, r.status, r.reason), []).append(f"{r.precision} {r.io}")
    if missing:
        lines += ["", "Not run here:"]
        lines += [f"- {backend} ({', '.join(what)}): {status} — {reason}"
                  for (backend, status, reason), what in missing.items()]
    sgemm = report.machine.get("sgemm_gflops")
    if sgemm:
        lines += ["", f"sgemm ceiling of this machine: {sgemm} GFLOP/s on "
                      f"{report.machine.get('threads')} threads."]
    return lines + [""]


def _run(stats, out: Path) -> list[str]:
    d = stats.to_dict()
    latency = d.get("latency_ms", {})
    # end_to_end also counts the frames' wait in the read-ahead queue; the stages are the work.
    parts = ", ".join(f"{stage} {v.get('p50', 0):.1f} ms" for stage, v in latency.items()
                      if isinstance(v, dict) and stage != "end_to_end")
    return ["## Runtime", "",
            f"`fcn-edge run` over a rendered video: {d['frames']} frames at {d['fps']:.1f} FPS "
            f"on {d['backend']}" + (f" (median per frame: {parts})" if parts else "") + ". "
            f"Output: `{(out / 'demo_overlay.avi').name}`; statistics: `run_stats.json`.", ""]


def _samples(path: Path, model: Path, backend: str, config: DemoConfig) -> Path:
    scenes = open_dataset("synthetic", "val", num_images=config.samples,
                          size=config.video_size, seed=config.seed + 2)
    rows = []
    with Segmenter(model, backend=backend) as seg:
        for i in range(len(scenes)):
            sample = scenes[i]
            bgr = np.ascontiguousarray(sample.image[..., ::-1])
            labels = seg(bgr)
            truth = colorize(sample.mask, seg.meta.palette, "bgr")
            rows.append([bgr, truth, overlay(bgr, seg.colorize(labels))])
        classes, palette = seg.meta.classes, seg.meta.palette
    return overlay_grid(path, rows, ("image", "ground truth", "prediction"),
                        legend=(classes, palette))


def _pct(value, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f} %"


def _num(value, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _signed(value) -> str:
    return "—" if value is None else f"{value:+.2f}"
