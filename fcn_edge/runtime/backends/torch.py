"""PyTorch backend: an fcn-edge checkpoint run by the model code itself — the reference.

It takes what a plain ONNX takes (normalised N×3×H×W float32 images; for a model with several
inputs, paper §5, one encoded N×c×H×W float32 tensor per modality, stacked here along channels
in the model's order) and gives what it gives (one output per head, named as the exporter
names them), and describes itself with the metadata the exporter would write for that
checkpoint, so a Segmenter treats a checkpoint like any other artifact and the ONNX/TensorRT
labels can be held to it.

The model code and that metadata live above the runtime (``fcn_edge.models``,
``fcn_edge.export``), which never imports them. They reach this backend through one seam: a
*checkpoint loader* registered with :func:`register_checkpoint_loader`. The module
:data:`LOADER_MODULE` registers the real one when imported, and :func:`checkpoint_loader`
imports it the first time a checkpoint opens, when nothing has registered yet — the only name
outside the runtime the runtime holds (``tests/test_layers.py`` knows it).

* CPU: fp32 (the reference), ``threads`` sets ``torch.set_num_threads`` — process-wide, as torch
  has one intra-op pool.
* CUDA: fp16 autocast, channels-last tensors (what tensor-core convolutions want) and the argmax
  on the GPU, so only labels cross the bus; optionally CUDA graphs: one graph captured per input
  shape (the last few kept) and replayed, which removes the per-layer launch overhead that
  dominates small frames.

torch is imported only when a backend opens: ``import fcn_edge.runtime`` must never import it.
Eager inference is thread-safe (``inference_mode``, an eval-mode model holds no per-call state);
with CUDA graphs it is not — a graph replays into its one set of static tensors.
"""
from __future__ import annotations

import importlib.metadata as md
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ...errors import BackendUnavailable, InputError, ModelFormatError
from ..metadata import ArtifactMeta
from ..processing import labels_dtype
from .base import BackendBase, InputSpec, check_threads
from .optional import has_module, lazy_import

TORCH_EXTRA = 'pip install "fcn-edge[train]"'
DEVICES = ("cpu", "cuda")
_MAX_GRAPHS = 4  # each captured graph keeps its static tensors and a private memory pool

#: ``loader(path, device, argmax, fp16) -> (model, meta)``: the checkpoint's model in eval mode
#: on ``device``, and the metadata its export would carry (precision fp16 or fp32).
CheckpointLoader = Callable[[Path, str, bool, bool], "tuple[Any, ArtifactMeta]"]
#: The module that registers the checkpoint loader when it is imported.
LOADER_MODULE = "fcn_edge.export.checkpoint_loader"
_loader: CheckpointLoader | None = None


def register_checkpoint_loader(loader: CheckpointLoader) -> None:
    """Make ``loader`` the way checkpoints open (the last one registered wins)."""
    global _loader
    _loader = loader


def checkpoint_loader() -> CheckpointLoader:
    """The registered checkpoint loader; imports :data:`LOADER_MODULE` first when none is."""
    if _loader is None:
        lazy_import(LOADER_MODULE, f"opening checkpoints needs fcn-edge's model code ({{exc}}): "
                                   f"{TORCH_EXTRA}")
    if _loader is None:
        raise BackendUnavailable(f"{LOADER_MODULE} registered no checkpoint loader: reinstall "
                                 f"fcn-edge ({TORCH_EXTRA})")
    return _loader


def probe(device: str) -> tuple[bool, str]:
    """Whether torch is installed and, for ``cuda``, sees a GPU (that check imports torch)."""
    if not has_module("torch"):
        return False, f"PyTorch is not installed: {TORCH_EXTRA}"
    if device == "cpu":
        try:
            version = md.version("torch")
        except md.PackageNotFoundError:  # installed outside pip: still importable
            version = "(version unknown)"
        return True, f"torch {version} on the CPU"
    torch = _import_torch()
    if not torch.cuda.is_available():
        build = " (a CPU-only build)" if torch.version.cuda is None else ""
        return False, f"torch {torch.__version__}{build} sees no CUDA GPU"
    return True, f"torch {torch.__version__} on {torch.cuda.get_device_name()}"


class TorchBackend(BackendBase):
    """An fcn-edge checkpoint (``.pt``, ``.pth`` or ``.safetensors``) in PyTorch.

    Args:
        path: the checkpoint (or a bare FCN state dict ``load_model`` recognises).
        device: ``cpu`` or ``cuda``.
        threads: CPU intra-op threads (0: leave torch's setting alone).
        fp16: autocast to float16 (default: on CUDA; refused on the CPU).
        cuda_graphs: capture and replay CUDA graphs (CUDA only; makes the backend not
            thread-safe).
        channels_last: NHWC memory format (default: on CUDA).
        argmax: return labels instead of logits (default: on CUDA, to move labels, not logits).
    """

    #: What to do when the checkpoint's meta does not describe its model.
    remake = "save the checkpoint again with a meta that lists the model's classes"

    def __init__(self, path: str | Path, *, device: str = "cpu", threads: int = 0,
                 fp16: bool | None = None, cuda_graphs: bool = False,
                 channels_last: bool | None = None, argmax: bool | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such checkpoint")
        if device not in DEVICES:
            raise InputError(f"device must be one of {DEVICES}, got {device!r}")
        check_threads(threads, "threads", zero="leave torch's setting alone")
        torch = self._torch = _import_torch()
        on_gpu = device == "cuda"
        if on_gpu and not torch.cuda.is_available():
            raise BackendUnavailable(probe("cuda")[1])
        if not on_gpu and (fp16 or cuda_graphs):
            raise InputError("fp16 and cuda_graphs need device='cuda'")
        if threads:
            torch.set_num_threads(threads)
        self._fp16 = on_gpu if fp16 is None else fp16
        self._channels_last = on_gpu if channels_last is None else channels_last
        self._model, self.meta = self._load(device, on_gpu if argmax is None else argmax)
        if self._channels_last:
            self._model = self._model.to(memory_format=torch.channels_last)
        self._device = torch.device(device)
        self._graphs: OrderedDict | None = OrderedDict() if cuda_graphs else None
        self.thread_safe = not cuda_graphs
        self.name = f"torch:{device}"
        self.input_spec = InputSpec.for_meta(self.meta)
        self._outputs = output_names(self.meta)
        self._label_dtypes = {name: torch.uint8 if labels_dtype(n) == np.uint8 else torch.int32
                              for name, n in output_classes(self.meta).items()}

    def _load(self, device: str, argmax: bool) -> tuple[Any, ArtifactMeta]:
        """The model and its metadata; metadata its checkpoint's meta cannot make (a class
        count that is not the model's, a std of 0) is one line naming the checkpoint."""
        try:
            return checkpoint_loader()(self.path, device, argmax, self._fp16)
        except ModelFormatError as exc:
            if str(self.path) in str(exc):
                raise
            raise ModelFormatError(f"{self.path}: {exc}; {self.remake}") from None

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Logits (or labels with ``argmax``) by output name, for encoded input batches."""
        torch = self._torch
        with torch.inference_mode():
            parts = [torch.from_numpy(_writeable(feed[name])).to(self._device)  # CPU: shared
                     for name in self.input_specs]
            # One input tensor (paper §5 early fusion; late fusion splits it again).
            x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
            if self._channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = self._replay(x) if self._graphs is not None else self._forward(x)
            return {name: t.cpu().numpy() for name, t in y.items()}  # on the CPU: no copy

    def _forward(self, x: Any) -> dict[str, Any]:
        torch = self._torch
        # Autocast's weight-cast cache must be off under graph capture (PyTorch's CUDA graphs
        # notes): cached casts would be freed while the graph still points at them.
        with torch.autocast(self._device.type, dtype=torch.float16, enabled=self._fp16,
                            cache_enabled=self._graphs is None):
            scores = self._model(x)
        if not isinstance(scores, dict):  # one head
            scores = {None: scores}
        out = {}
        for task, logits in scores.items():
            name = self._outputs[task]
            out[name] = (logits.argmax(1).to(self._label_dtypes[name]) if self.meta.argmax
                         else logits.float().contiguous())
        return out

    def _replay(self, x: Any) -> Any:
        key = tuple(x.shape)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = self._capture(x)
            if len(self._graphs) > _MAX_GRAPHS:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return static_out

    def _capture(self, x: Any) -> tuple[Any, Any, Any]:
        """Capture one forward pass for ``x``'s shape (PyTorch's documented recipe)."""
        torch = self._torch
        static_in = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up off the capture: cuDNN picks its kernels
            for _ in range(3):
                self._forward(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._forward(static_in)
        return graph, static_in, static_out

    def describe(self) -> str:
        torch = self._torch
        where = (torch.cuda.get_device_name(self._device) if self._device.type == "cuda"
                 else f"CPU, {torch.get_num_threads()} threads")
        extras = [k for k, on in (("fp16", self._fp16), ("channels_last", self._channels_last),
                                  ("CUDA graphs", self._graphs is not None),
                                  ("argmax", self.meta.argmax)) if on]
        return (f"torch {torch.__version__} on {where}" + (f" ({', '.join(extras)})" if extras
                                                            else "") + f", {self.path.name}")

    def close(self) -> None:
        self._model = self._graphs = None
        super().close()


def output_names(meta: Any) -> dict[str | None, str]:
    """Task (None for a one-task model) → the output tensor that carries it."""
    if not meta.heads:
        return {None: meta.output_name}
    return {h.task: h.output for h in meta.heads}


def output_classes(meta: Any) -> dict[str, int]:
    """Output tensor → its number of classes."""
    if not meta.heads:
        return {meta.output_name: meta.num_classes}
    return {h.output: h.num_classes for h in meta.heads}


def _writeable(batch: np.ndarray) -> np.ndarray:
    return batch if batch.flags.writeable else batch.copy()  # torch.from_numpy warns otherwise


def _import_torch() -> Any:
    return lazy_import("torch", f"running checkpoints needs PyTorch ({{exc}}): {TORCH_EXTRA}")
