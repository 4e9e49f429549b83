"""fcn-edge's fp16 converter against onnxconverter-common's and NVIDIA ModelOpt's AutoCast on
the graphs fcn-edge exports: valid, run by ONNX Runtime, I/O types kept, TensorRT check, fp16
agreement with fp32, and the size of the result.

    python benchmarks/fp16_converters.py [--graphs r18,r18-raw-argmax,...] [--converters ...]

Each graph is what ``fcn-edge export`` writes before fp16 (traced, onnxslim, parity-checked) for
a random-weight checkpoint made here (VGG16 and AlexNet with fc_channels=256: the same operators
at a tenth of the size). fp16 outputs come from ``execute.run_fp16``: ONNX Runtime where it has
an fp16 kernel for every node, else numpy float16 arithmetic (ORT's CPU provider computes fp16
Conv in fp32). ModelOpt pins onnx~=1.21 and onnxruntime-gpu, which conflict with fcn-edge's
environment: install it in a separate venv to fill its rows (BENCHMARKS.md says how).
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import traceback
import warnings
from datetime import date
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort

from fcn_edge.export.artifact_meta import artifact_meta
from fcn_edge.export.execute import run_fp16
from fcn_edge.export.exporter import ExportConfig, export_fp32
from fcn_edge.export.fp16 import convert_to_fp16
from fcn_edge.export.parity import artifact_feed, scene_arrays
from fcn_edge.export.trt_compat import check_tensorrt_targets
from fcn_edge.models import create_model, load_model, save_checkpoint

TRACE, SIZES = 48, ((48, 64), (72, 96))   # parity at the trace size; compared at two others
RAW_ARGMAX = {"raw_io": True, "argmax": True}
#: name → (create_model arguments, export options)
GRAPHS = {
    "r18": ({"backbone": "resnet18"}, {}),
    "r18-argmax": ({"backbone": "resnet18"}, {"argmax": True}),
    "r18-raw-argmax": ({"backbone": "resnet18"}, RAW_ARGMAX),
    "r18-raw-argmax-int32": ({"backbone": "resnet18"}, {**RAW_ARGMAX, "labels_dtype": "int32"}),
    "alexnet-16s": ({"name": "fcn16s", "backbone": "alexnet", "fc_channels": 256}, {}),
    "vgg16-ref-raw-argmax": ({"backbone": "vgg16", "layout": "reference", "fc_channels": 256},
                             RAW_ARGMAX),
    "two-heads-raw-argmax": ({"heads": {"semantic": 8, "geometric": 3}}, RAW_ARGMAX),
    "rgbd": ({"inputs": (("rgb", 3), ("depth", 1))}, {}),
    "rgb-hha-late-argmax": ({"inputs": (("rgb", 3), ("hha", 3)), "fusion": "late"},
                            {"argmax": True}),
}


def _onnxconverter_common(model: onnx.ModelProto, **options) -> onnx.ModelProto:
    from onnxconverter_common import float16
    return float16.convert_float_to_float16(model, keep_io_types=True, **options)


def _occ_wrapped(model: onnx.ModelProto) -> onnx.ModelProto:
    """The smallest wrapper found that makes its output valid on our graphs: the Cast(to=FLOAT)
    nodes in ``node_block_list`` (``"Cast"`` in ``op_block_list`` never returns: the casts it
    inserts are blocked in turn), value_info derived again from the nodes (it types a blocked
    node's outputs fp16 and fp32 at once), fp16's own range (its default clips at 1e4)."""
    casts = [n.name for n in model.graph.node
             if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT]
    out = _onnxconverter_common(model, node_block_list=casts, min_positive_val=5.96e-8,
                                max_finite_val=65504.0)
    del out.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(out)


def _ort_transformers(model: onnx.ModelProto, sort: bool = False) -> onnx.ModelProto:
    """The converter onnxruntime ships (``onnxruntime.transformers.float16``: no new package);
    with ``sort`` its nodes put in topological order (keep_io_types appends the input casts
    last, which onnx.checker refuses)."""
    from onnxruntime.transformers import float16
    out = float16.convert_float_to_float16(model, keep_io_types=True)
    if sort:
        nodes, ready = list(out.graph.node), {v.name for v in out.graph.input}
        ready |= {t.name for t in out.graph.initializer} | {""}
        ordered = []
        while nodes:
            node = next(n for n in nodes if set(n.input) <= ready)
            nodes.remove(node)
            ordered.append(node)
            ready.update(node.output)
        del out.graph.node[:]
        out.graph.node.extend(ordered)
    return out


def _autocast_f16(model: onnx.ModelProto) -> onnx.ModelProto:
    from modelopt.onnx.autocast import convert_to_f16
    return convert_to_f16(model, keep_io_types=True)


def _autocast_mixed(model: onnx.ModelProto, calibration: dict | None = None) -> onnx.ModelProto:
    """TensorRT 11's documented step: ``convert_to_mixed_precision(path, "fp16",
    keep_io_types=True)``, reading a file; with ``calibration`` our scenes instead of
    Polygraphy's random inputs."""
    from modelopt.onnx.autocast import convert_to_mixed_precision
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "model.onnx"
        onnx.save(model, str(path))
        data = None
        if calibration is not None:
            data = str(Path(work) / "calibration.npz")
            np.savez(data, **calibration)
        return convert_to_mixed_precision(str(path), "fp16", keep_io_types=True,
                                          calibration_data=data)


#: name → converter(model, feed) → fp16 model
CONVERTERS: dict[str, Callable] = {
    "fcn-edge": lambda model, feed: convert_to_fp16(model),
    "occ": lambda model, feed: _onnxconverter_common(model),
    "occ+wrapper": lambda model, feed: _occ_wrapped(model),
    "ort-transformers": lambda model, feed: _ort_transformers(model),
    "ort-transformers+sort": lambda model, feed: _ort_transformers(model, sort=True),
    "autocast-f16": lambda model, feed: _autocast_f16(model),
    "autocast-mixed": lambda model, feed: _autocast_mixed(model),
    "autocast-mixed+data": lambda model, feed: _autocast_mixed(model, feed),
}


def export_graph(name: str, work: Path) -> tuple[onnx.ModelProto, object]:
    """The exporter's fp32 graph of ``GRAPHS[name]``: random weights, score layers drawn from
    N(0, 0.05²) (they start at zero, §4.2) so that labels vary across the image."""
    import torch

    model_args, options = GRAPHS[name]
    torch.manual_seed(0)
    kwargs = {"name": "fcn8s", "num_classes": 8, **model_args}
    if "heads" in kwargs:
        del kwargs["num_classes"]
    model = create_model(**kwargs).eval()
    with torch.no_grad():
        for key, param in model.named_parameters():
            if key.split(".")[-2].startswith("score"):
                param.normal_(0, 0.05) if param.ndim > 1 else param.zero_()
    meta = {"classes": [f"c{i}" for i in range(8)]}
    if "heads" in kwargs:
        meta["tasks"] = {task: {"classes": [f"{task}{i}" for i in range(n)]}
                         for task, n in kwargs["heads"].items()}
    checkpoint = save_checkpoint(model, work / f"{name}.pt", meta)
    config = ExportConfig(str(checkpoint), parity_sizes=((TRACE, TRACE),), **options)
    loaded = load_model(checkpoint).eval()
    art = artifact_meta(loaded, checkpoint, raw_io=config.raw_io, argmax=config.argmax,
                        shapes=None, options={}, labels_dtype=config.labels_dtype)
    return export_fp32(loaded, art, config, log=lambda line: None)


def first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:110]}"


def io_types(model: onnx.ModelProto) -> dict[str, int]:
    return {v.name: v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)}


def fp32_nodes(model: onnx.ModelProto) -> int:
    """Nodes other than Cast that read or write a float32 tensor: what still computes fp32."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}
    types.update({t.name: t.data_type for t in g.initializer})
    return sum(node.op_type != "Cast" and any(types.get(n) == onnx.TensorProto.FLOAT
                                               for n in (*node.input, *node.output))
               for node in g.node)


def trt_verdict(model: onnx.ModelProto) -> str:
    failing = []
    for report in check_tensorrt_targets(model):
        rules = sorted({f.rule for f in report.errors})
        if rules:
            failing.append(f"{report.tensorrt}: {','.join(rules)}")
    return "; ".join(failing) or "ok 8.6/10/11"


def agreement(fp32: onnx.ModelProto, fp16: onnx.ModelProto, feeds: list[dict]) -> str:
    """Worst relative max |Δscores| and label agreement over ``feeds``; labels compared as
    argmax over classes where the outputs are scores."""
    session = ort.InferenceSession(fp32.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    worst_rel, worst_agree, executor = 0.0, 1.0, ""
    for feed in feeds:
        reference = dict(zip(names, session.run(names, feed)))
        outputs, executor = run_fp16(fp16, feed)
        for name, ref in reference.items():
            out = np.asarray(outputs[name])
            if np.issubdtype(ref.dtype, np.floating):
                rel = np.abs(out.astype(np.float32) - ref).max() / np.abs(ref).max()
                worst_rel = max(worst_rel, float(rel))
                out, ref = out.argmax(1), ref.argmax(1)
            worst_agree = min(worst_agree, float((out == ref).mean()))
    rel = f"{worst_rel:.1e}" if worst_rel else "—"
    return f"{rel} / {worst_agree:.2%} ({'ORT' if executor == 'onnxruntime' else 'np fp16'})"


def judge(fp32: onnx.ModelProto, meta, converter: Callable) -> list[str]:
    """One table row's cells after the graph's name: see ``HEADER``."""
    feeds = [artifact_feed(meta, arrays) for arrays in scene_arrays(meta, SIZES)]
    try:
        fp16 = converter(fp32, feeds[0])
    except ImportError:
        raise
    except Exception as error:   # noqa: BLE001 — the row records what the converter raised
        return [f"fails: {first_line(error)}"] + [""] * 5
    try:
        onnx.checker.check_model(fp16, full_check=True)
        valid = "ok"
    except Exception as error:   # noqa: BLE001
        valid = first_line(error)
    try:
        ort.InferenceSession(fp16.SerializeToString(),
                             providers=["CPUExecutionProvider"]).run(None, feeds[0])
        runs = "runs"
    except Exception as error:   # noqa: BLE001
        runs = first_line(error)
    changed = {k: (v, io_types(fp16).get(k)) for k, v in io_types(fp32).items()
               if io_types(fp16).get(k) != v}
    io = "kept" if not changed else ", ".join(f"{k} {a}→{b}" for k, (a, b) in changed.items())
    io += "" if {p.key for p in fp16.metadata_props} >= {p.key for p in fp32.metadata_props} \
        else "; metadata dropped"
    opset = next(o.version for o in fp16.opset_import if o.domain in ("", "ai.onnx"))
    try:
        figures = agreement(fp32, fp16, feeds) if runs == "runs" else "—"
    except Exception as error:   # noqa: BLE001
        figures = first_line(error)
    casts = sum(n.op_type == "Cast" for n in fp16.graph.node)
    size = f"{len(fp16.graph.node)} / {casts} / {fp32_nodes(fp16)}"
    return [valid if valid == "ok" else f"checker: {valid}", runs, f"{io} (opset {opset})",
            trt_verdict(fp16), figures, size]


HEADER = ("graph", "converter", "onnx.checker", "ORT CPU session", "I/O types",
          "TensorRT check", "rel max \\|Δscores\\| / labels agree", "nodes / casts / fp32 nodes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", default=",".join(GRAPHS))
    parser.add_argument("--converters", default=",".join(CONVERTERS))
    parser.add_argument("--traceback", action="store_true", help="print converters' errors")
    args = parser.parse_args()
    # onnxconverter-common warns once per value it clips or flushes: thousands of lines
    warnings.filterwarnings("ignore", module="onnxconverter_common")
    print(f"{platform.machine()}, {date.today()}, onnx {onnx.__version__}, onnxruntime "
          f"{ort.__version__}; traced at {TRACE}², compared at "
          + ", ".join(f"{h}×{w}" for h, w in SIZES))
    print("| " + " | ".join(HEADER) + " |\n|" + " --- |" * len(HEADER))
    with tempfile.TemporaryDirectory(prefix="fp16-converters-") as work:
        for graph in args.graphs.split(","):
            fp32, meta = export_graph(graph, Path(work))
            print(f"| {graph} | fp32 | | | | {trt_verdict(fp32)} | | {len(fp32.graph.node)} / "
                  f"{sum(n.op_type == 'Cast' for n in fp32.graph.node)} / {fp32_nodes(fp32)} |",
                  flush=True)
            for name in args.converters.split(","):
                try:
                    cells = judge(fp32, meta, CONVERTERS[name])
                except ImportError as error:
                    cells = [f"not installed ({error.name})"] + [""] * 5
                if args.traceback and cells[0].startswith("fails"):
                    traceback.print_exc()
                print(f"| {graph} | {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
