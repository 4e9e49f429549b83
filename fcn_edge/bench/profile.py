"""Where a row's time goes: ONNX Runtime's own profiler, per node and per op type.

The table says how fast a row is; this says why. For each ONNX Runtime CPU row that ran,
``fcn-edge bench --profile N`` opens a profiling session on the same artifact file with the same
threads and graph optimisations as the timed one, feeds it the same prepared batch (warm-up
calls first, then ``N`` profiled ones) and reads two things ONNX Runtime writes:

* the trace (``enable_profiling``; a Chrome-trace JSON list): one ``cat: "Node"`` event named
  ``<node>_kernel_time`` per node per call, with ``dur`` in µs and ``args`` holding ``op_name``,
  ``provider`` and the tensors' ``input_type_shape``/``output_type_shape``; and one
  ``model_run`` event per call, the profiled total;
* its optimised graph (``optimized_model_filepath``): the nodes that really ran, named as in
  the trace. The ONNX file's own node names are gone by then (convolutions fused with their
  ReLU and residual Add, rewritten to NCHWc or NHWC kernels), so the ``group`` attribute and the
  weights' shapes come from this graph.

From these: each node's mean time per call, its FLOPs (``fcn_edge.export.flops.node_flops``:
weights from the graph, activations from the trace) and the achieved GFLOP/s per op type, with
grouped and depthwise convolutions told apart. Set against the sgemm ceiling under the table,
that is what says why a net is slow on a CPU: a depthwise convolution does little arithmetic per
byte it moves and runs far below the ceiling, so its share of the time outgrows its FLOPs.
The trace itself is kept under ``--out``/``profile/`` for chrome://tracing or Perfetto.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import FcnEdgeError
from ..io import Log, atomic_path

#: Nodes listed by time in each profile.
TOP_NODES = 10
_KERNEL = "_kernel_time"
_PROFILED_BACKEND = "onnxruntime:cpu"


@dataclass(frozen=True)
class NodeTime:
    """One node of ONNX Runtime's optimised graph: mean ms per call, share of the node time."""

    name: str
    op: str                       # op type; "Conv depthwise", "Conv grouped" for group > 1
    ms: float
    share: float                  # fraction of the summed node time
    gflops: float | None          # per call; None for an op whose FLOPs are not counted


@dataclass(frozen=True)
class OpTime:
    """Every node of one op type together."""

    op: str
    nodes: int
    ms: float
    share: float
    gflops: float | None
    gflops_per_s: float | None    # achieved: its GFLOPs over its time


@dataclass
class RowProfile:
    """The profile of one bench row (``model``: ``model`` or ``baseline``)."""

    model: str
    row: str                      # "onnxruntime:cpu fp32 plain 256x512"
    trace: str = ""
    calls: int = 0
    run_ms: float = 0.0           # mean ``model_run`` per profiled call: the profiled total
    node_ms: float = 0.0          # the nodes' time per call; the rest is the executor's
    gflops: float | None = None
    by_op: list[OpTime] = field(default_factory=list)
    top: list[NodeTime] = field(default_factory=list)
    error: str = ""               # why there is no profile


def profile_rows(rows: Iterable, model: str, batch_of: Callable[[Path], np.ndarray],
                 threads: int, calls: int, warmup: int, out_dir: Path,
                 log: Log) -> list[RowProfile]:
    """A :class:`RowProfile` for each row of ``rows`` (BenchRow) that ran on ONNX Runtime's
    CPU provider; ``batch_of(path)`` is the batch the row's model-only timing fed."""
    profiles = []
    for row in rows:
        if row.backend != _PROFILED_BACKEND or row.status != "ok":
            continue
        label = f"{row.backend} {row.precision} {row.io} {row.size}"
        trace = out_dir / "profile" / f"{model}-{label.replace(':', '-').replace(' ', '-')}.json"
        log(f"profiling {model} {label}: {calls} calls")
        try:
            events, graph = _run_profiled(Path(row.path), batch_of(Path(row.path)), threads,
                                          calls, warmup, trace)
            profiles.append(summarize(events, graph, warmup, model, label, str(trace)))
        except (FcnEdgeError, OSError) as exc:
            profiles.append(RowProfile(model, label, error=str(exc)))
    return profiles


def _run_profiled(path: Path, batch: np.ndarray, threads: int, calls: int, warmup: int,
                  trace: Path) -> tuple[list[dict], dict]:
    """Run ``path`` with ONNX Runtime's profiler on; the trace's events (the file moved to
    ``trace`` atomically) and the optimised graph's nodes by name."""
    import onnx
    import onnxruntime as ort

    trace.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".profile.", dir=trace.parent) as tmp:
        options = ort.SessionOptions()  # as runtime/backends/onnxruntime.py opens the timed one
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort")
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        try:
            session = ort.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: batch}
            for _ in range(warmup + calls):
                session.run(None, feed)
            written = Path(session.end_profiling())
        except Exception as exc:  # onnxruntime's own classes, all plain Exceptions
            raise FcnEdgeError(f"onnxruntime's profiler failed on {path.name}: "
                               f"{str(exc).splitlines()[0]}") from None
        graph = onnx.load(options.optimized_model_filepath).graph
        events = json.loads(written.read_text(encoding="utf-8"))
        with atomic_path(trace) as target:
            os.replace(written, target)
    weights = {init.name: tuple(init.dims) for init in graph.initializer}
    return events, {node.name: (node, weights) for node in graph.node}


def summarize(events: list[dict], graph: dict, warmup: int, model: str, row: str,
              trace: str) -> RowProfile:
    """Per-node and per-op-type time of the calls after the first ``warmup`` in a trace."""
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    kept = runs[warmup:]
    if not kept:
        raise FcnEdgeError(f"the profile {trace} holds no call after the warm-up")
    start = kept[0]["ts"]
    totals: dict[str, list] = {}  # node -> [µs, op, gflops]
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith(_KERNEL) or e["ts"] < start:
            continue
        name = e["name"][:-len(_KERNEL)]
        if name not in totals:
            totals[name] = [0, *_op_and_gflops(e["args"], graph.get(name))]
        totals[name][0] += e["dur"]
    calls = len(kept)
    node_us = sum(t[0] for t in totals.values()) or 1
    nodes = sorted((NodeTime(name, op, us / calls / 1e3, us / node_us, gflops)
                    for name, (us, op, gflops) in totals.items()), key=lambda n: -n.ms)
    counted = [n.gflops for n in nodes if n.gflops is not None]
    return RowProfile(model, row, trace, calls, sum(r["dur"] for r in kept) / calls / 1e3,
                      node_us / calls / 1e3, sum(counted) if counted else None,
                      _by_op(nodes), nodes[:TOP_NODES])


def _by_op(nodes: list[NodeTime]) -> list[OpTime]:
    ops: dict[str, list[NodeTime]] = {}
    for node in nodes:
        ops.setdefault(node.op, []).append(node)
    result = []
    for op, group in ops.items():
        ms = sum(n.ms for n in group)
        counted = [n.gflops for n in group if n.gflops is not None]
        gflops = sum(counted) if counted else None
        result.append(OpTime(op, len(group), ms, sum(n.share for n in group), gflops,
                             gflops / (ms / 1e3) if gflops and ms > 0 else None))
    return sorted(result, key=lambda o: -o.ms)


def _op_and_gflops(args: dict, found) -> tuple[str, float | None]:
    """The op label of a traced node (grouped convolutions told apart) and its GFLOPs."""
    from ..export.flops import node_flops

    op = args.get("op_name", "?")
    if found is None:
        return op, None
    node, weights = found
    shapes = dict(zip(node.input, _shapes(args.get("input_type_shape"))))
    shapes.update(zip(node.output, _shapes(args.get("output_type_shape"))))
    shapes.update((k, weights[k]) for k in node.input if k in weights)  # the trace's can be
    try:                                                               # a prepacked buffer's
        flops = node_flops(node, shapes.get)
    except FcnEdgeError:
        flops = None
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    if group > 1:
        op += " depthwise" if _depthwise(node, shapes, group) else " grouped"
    return op, None if flops is None else flops / 1e9


def _depthwise(node, shapes: dict, group: int) -> bool:
    """One input channel per group: a Conv weight is (Cout, Cin/group, kh, kw), a
    ConvTranspose weight (Cin, Cout/group, kh, kw); QLinearConv's weight is input 3."""
    weight = shapes.get(node.input[3 if "QLinear" in node.op_type else 1])
    if not weight or len(weight) < 2:
        return False
    return weight[0] == group if node.op_type == "ConvTranspose" else weight[1] == 1


def _shapes(listed) -> list[tuple[int, ...] | None]:
    """``[{"float": [1, 3, 8, 8]}, …]`` as the trace lists tensors → shapes."""
    return [tuple(next(iter(t.values()))) if t else None for t in listed or []]


def format_profiles(profiles: list[RowProfile], sgemm: float | None = None) -> str:
    """The profiles as text: per op type, then the slowest nodes, for each profiled row."""
    lines = []
    for p in profiles:
        head = f"profile of {p.model} {p.row}"
        if p.error:
            lines += [f"{head}: none ({p.error})", ""]
            continue
        lines.append(f"{head}: {p.calls} calls, {p.run_ms:.2f} ms per call, of which nodes "
                     f"{p.node_ms:.2f} ms; trace {p.trace}")
        lines.append(f"  {'op type':<26} {'nodes':>5} {'ms':>8} {'share':>7} {'GFLOPs':>7} "
                     f"{'GFLOP/s':>8}" + ("  % of sgemm" if sgemm else ""))
        for o in p.by_op:
            lines.append(f"  {o.op:<26} {o.nodes:>5} {o.ms:>8.2f} {o.share * 100:>6.1f}% "
                         f"{_num(o.gflops, 3):>7} {_num(o.gflops_per_s, 1):>8}"
                         + (f"  {_num(o.gflops_per_s and o.gflops_per_s / sgemm * 100, 0):>9}"
                            if sgemm else ""))
        lines.append(f"  {'slowest nodes':<50} {'op type':<26} {'ms':>8} {'share':>7} "
                     f"{'GFLOP/s':>8}")
        for n in p.top:
            speed = n.gflops / (n.ms / 1e3) if n.gflops and n.ms > 0 else None
            lines.append(f"  {_tail(n.name, 50):<50} {n.op:<26} {n.ms:>8.2f} "
                         f"{n.share * 100:>6.1f}% {_num(speed, 1):>8}")
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def _num(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _tail(name: str, width: int) -> str:
    """The end of a long node name (its layer is at the end of ONNX's path-like names)."""
    return name if len(name) <= width else "…" + name[-(width - 1):]
