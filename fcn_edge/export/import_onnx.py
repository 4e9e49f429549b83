"""``fcn-edge import``: a foreign segmentation ONNX made self-describing, so the runtime runs it
like an fcn-edge export.

The runtime knows an artifact by its metadata and its tensor names: a normalised N×3×H×W float32
``images`` input and N×C×H×W float32 ``logits`` at the input's size. A foreign model (a
torchvision FCN, jetson-inference's FCN-ResNet18, anything from ``torch.onnx.export``) meets that
contract after at most three small edits, made here once instead of in every runtime:

- its input is renamed ``images``; an NHWC input gets a Transpose in front (NCHW → NHWC);
- its score output is renamed ``logits``; a coarse score grid (logits at 1/8 or 1/32 of the
  input, as jetson-inference's) gets a bilinear Resize to the input's size appended, the output
  the original graph gave stays an output under its own name;
- fcn-edge's metadata (classes, palette, mean/std, colour order, shapes) goes into
  ``metadata_props``.

Optionally (``argmax``, ``raw_io``) ArgMax is appended and uint8 BGR NHWC ``frames`` are
normalised inside the graph, so the runtime's lean path (no copy per frame) applies; the edits
themselves are in ``import_graph.py``.

Upsampling in the graph, not in the runtime, keeps the runtime lean and every backend alike:
ONNX Runtime, a TensorRT engine built from the file and Triton all get logits at the frame's
size, and the runtime keeps one post-processing path (argmax). A fixed input size is written as
the artifact's shapes (min = opt = max); the ONNX Runtime backend then treats it as a hard
profile, so Segmenter resizes frames into it and maps the labels back.

Before anything is written the result is checked: the original and the imported graph run in
ONNX Runtime on the same input and every output of the original must come back identical (with
raw IO within float32 rounding; the resized logits at the input's size, labels their argmax),
then a Segmenter segments a frame with it. The file is written and checked in a hidden staging
folder beside the output and moved into place only then (``staging.py``), so ``-o`` may name
an existing file, even the model itself: it is replaced whole, after the check, or not at all.
A model over protobuf's 2 GB limit keeps its weights in ONNX's external data format: read from
beside the original, written beside the output as ``OUT.onnx.data``, both files staged and
moved together. onnx and onnxruntime, no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import EncodeError
from onnx import TensorProto

from .. import __version__
from ..errors import FcnEdgeError, InputError, ModelFormatError
from ..io import check_writable, file_sha256
from ..runtime.metadata import (INPUT_FRAMES, INPUT_IMAGES, MEAN_RANGE, NCHW, NHWC,
                                OUTPUT_LABELS, OUTPUT_LOGITS, STD_RANGE, ArtifactMeta, Shapes,
                                default_shapes)
from ..runtime.processing import frames_to_input, normalization_affine
from ..runtime.palette import voc_colours
from .import_graph import ForeignGraph, RawIO, rewrite, score_name
from .onnx_props import set_metadata
from .staging import Staging

#: ImageNet statistics, RGB, on pixel / 255: what torchvision's segmentation models expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The size a dynamic-size model is probed at (distinct sides catch a transposed output).
PROBE_SIZE = (128, 160)
#: The largest message protobuf serialises: an ONNX model at or over it must keep its tensors
#: in an external data file (ONNX's external data format).
PROTOBUF_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class ImportOptions:
    """What ``fcn-edge import`` was told about a foreign model."""

    classes: str = "voc"              # voc | cityscapes | a file, one class name per line
    mean: tuple[float, float, float] = IMAGENET_MEAN   # on pixel / scale
    std: tuple[float, float, float] = IMAGENET_STD
    color: str = "rgb"                # the channel order the model was trained on
    scale: float = 255.0              # pixels are divided by this before mean/std
    score_output: str | None = None   # which output is the score map, with several
    argmax: bool = False              # append ArgMax: labels out, C times less to copy back
    raw_io: bool = False              # uint8 BGR NHWC frames in, normalised in the graph
    #: The colours of the classes (one RGB triple each, as a jetson-inference colors.txt
    #: gives them); None: the class list's own (VOC's colour map for a file).
    palette: tuple[tuple[int, int, int], ...] | None = None
    #: ``(key, value)`` pairs recorded beside the import's facts in ``export_options`` (where
    #: the file came from: the zoo entry, the archive's hash).
    provenance: tuple[tuple[str, Any], ...] = ()


def import_onnx(model_path: str | Path, options: ImportOptions,
                output: str | Path | None = None, log=print) -> Path:
    """Write ``model_path`` with fcn-edge's metadata (and the edits above) to ``output``
    (default: ``<name>.fcn-edge.onnx`` beside it); returns the path written. Any refusal is
    one InputError/ModelFormatError line, and nothing is written."""
    src = Path(model_path)
    if not src.is_file():
        raise InputError(f"{src}: no such ONNX file")
    out = Path(output) if output else src.with_name(src.stem + ".fcn-edge.onnx")
    check_writable(out, "-o")
    classes, palette = class_names(options.classes)
    if options.palette is not None:
        if len(options.palette) != len(classes):
            raise InputError(f"{len(options.palette)} colours for {len(classes)} classes: give "
                             f"one colour per class")
        palette = tuple(tuple(int(v) for v in row) for row in options.palette)
    model = _load(src)
    found = inspect_graph(model, src, options.score_output)
    channels = _channels(src, found)
    if channels != len(classes):
        raise InputError(f"{src}: output '{found.output}' has {channels} "
                         f"score channels but --classes {options.classes} names {len(classes)} "
                         f"classes: give the class list the model was trained on")
    meta = _meta(src, found, classes, palette, options)
    raw = None
    if options.raw_io:
        scale, bias = normalization_affine(meta.mean, meta.std)
        raw = RawIO(tuple(scale.tolist()), tuple(bias.tolist()), meta.color_order == "rgb")
    imported = rewrite(model, found, len(classes) if options.argmax else 0, raw)
    set_metadata(imported, meta.to_props())
    _write(imported, out, lambda written: verify(src, written, found, meta, shown=out))
    coarse = found.grid != found.probe
    log(f"imported {src.name}: {found.layout} input '{found.input}' "
        f"({'fixed ' + 'x'.join(map(str, found.fixed)) if found.fixed else 'dynamic size'}), "
        f"score output '{found.output}' ({len(classes)} classes"
        f"{', coarse grid upsampled in the graph' if coarse else ''}); checked in ONNX Runtime")
    return out


def needs_external_data(size: int, limit: int | None = None) -> bool:
    """Whether a model of ``size`` serialised bytes must keep its tensors in an external data
    file: protobuf cannot write one message of ``limit`` (:data:`PROTOBUF_LIMIT`) bytes or
    more."""
    return size >= (PROTOBUF_LIMIT if limit is None else limit)


def _serialized_size(model: onnx.ModelProto) -> int:
    """The model's size as one file; :data:`PROTOBUF_LIMIT` when protobuf refuses to count it
    (its ``ByteSize`` serialises, and cannot past the limit)."""
    try:
        return model.ByteSize()
    except EncodeError:
        return PROTOBUF_LIMIT


def _write(model: onnx.ModelProto, out: Path, check) -> None:
    """Write ``model`` to ``out`` (and its tensors to ``OUT.data`` beside it when it is too big
    for one file), ``check`` the written file, then move it into place: whole or not at all,
    the file it replaces (the original itself, with ``-o`` naming it) untouched until then."""
    with Staging() as staging:
        staged = staging.path(out)
        try:
            if needs_external_data(_serialized_size(model)):
                data = out.with_name(out.name + ".data")
                staging.path(data)  # beside the staged model: its location is relative
                onnx.save_model(model, str(staged), save_as_external_data=True,
                                all_tensors_to_one_file=True, location=data.name,
                                size_threshold=1024)
                # onnx creates it 0600: readable as the model is (a service user, Triton)
                staging.staged(data).chmod(staged.stat().st_mode & 0o777)
            else:
                onnx.save(model, str(staged))
        except OSError as exc:  # a full disk: Staging names the real file, given one
            raise OSError(exc.errno, exc.strerror, exc.filename or str(staged)) from exc
        check(staged)
        staging.commit()


def class_names(spec: str) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """``voc`` (21), ``cityscapes`` (the 19 train ids) or a file, one name per line; with
    their palette (VOC's colour map for a file)."""
    from ..data.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, VOC_CLASSES
    from ..data.files import read_classes_file

    if spec == "voc":
        names = VOC_CLASSES
    elif spec == "cityscapes":
        return CITYSCAPES_CLASSES, tuple(map(tuple, CITYSCAPES_PALETTE.tolist()))
    elif Path(spec).is_file():
        names = read_classes_file(spec)
    else:
        raise InputError(f"--classes {spec}: neither voc, cityscapes nor a file of class names "
                         f"(one per line)")
    return names, voc_colours(len(names))


def _load(src: Path) -> onnx.ModelProto:
    """The model with its tensors, external data read from beside it; checked from the file,
    as the checker reads a model over 2 GB."""
    try:
        onnx.checker.check_model(str(src))
        model = onnx.load(str(src), load_external_data=True)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError …
        raise ModelFormatError(f"{src}: not a valid ONNX model ({str(exc).splitlines()[0]})"
                               ) from None
    if any(p.key == "format" and p.value == "fcn-edge/onnx" for p in model.metadata_props):
        raise InputError(f"{src} already carries fcn-edge metadata: run it as it is")
    return model


def _dims(value_info) -> list[int | None]:
    """A tensor's dims: ints where fixed, None where dynamic (names or unset)."""
    return [d.dim_value if d.HasField("dim_value") else None
            for d in value_info.type.tensor_type.shape.dim]


def inspect_graph(model: onnx.ModelProto, src: Path, score_output: str | None) -> ForeignGraph:
    """The input (its layout, fixed or dynamic size) and the score output, probed in ONNX
    Runtime; refuses what the runtime cannot feed or what cannot be a score map."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise InputError(f"{src} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)})"
                         f": fcn-edge import takes single-input segmentation models (one image "
                         f"batch in); export a multi-input net with fcn-edge export")
    inp = inputs[0]
    dims = _dims(inp)
    if inp.type.tensor_type.elem_type != TensorProto.FLOAT or len(dims) != 4 or \
            3 not in (dims[1], dims[3]):
        raise InputError(f"{src}: input '{inp.name}' is {_describe(inp)}; import takes a float32 "
                         f"image batch, N×3×H×W or N×H×W×3")
    layout = NCHW if dims[1] == 3 else NHWC
    hw = dims[2:4] if layout == NCHW else dims[1:3]
    fixed = tuple(hw) if None not in hw else None
    output = _score_output(model, src, score_output)
    probe = fixed or PROBE_SIZE
    grid = _probe(inp.name, layout, dims[0] or 1, probe, output, src)
    return ForeignGraph(inp.name, layout, fixed, dims[0], output, grid, probe)


def _describe(value_info) -> str:
    dtype = TensorProto.DataType.Name(value_info.type.tensor_type.elem_type).lower()
    return f"{dtype} [{', '.join(str(d or '?') for d in _dims(value_info))}]"


def _score_output(model: onnx.ModelProto, src: Path, chosen: str | None) -> str:
    names = [o.name for o in model.graph.output]
    if chosen is not None and chosen not in names:
        raise InputError(f"--score-output {chosen}: {src} has no such output (it has "
                         f"{', '.join(names)})")
    if chosen is None and len(names) > 1:
        raise InputError(f"{src} has {len(names)} outputs ({', '.join(names)}): say which is "
                         f"the score map with --score-output NAME")
    name = chosen or names[0]
    info = next(o for o in model.graph.output if o.name == name)
    dims = _dims(info)
    if info.type.tensor_type.elem_type != TensorProto.FLOAT or \
            (dims and len(dims) != 4):
        raise InputError(f"{src}: output '{name}' is {_describe(info)}, not a score map "
                         f"(float32 N×classes×h×w); give the score output with --score-output")
    return name


def _probe(input_name: str, layout: str, batch: int, size: tuple[int, int], output: str,
           src: Path) -> tuple[int, int]:
    """Run the original (from its file: external data resolves, and a model over 2 GB could
    not be serialised to bytes) once; the score map's (h, w), refused unless it is N×C×h×w,
    h ≤ H and w ≤ W."""
    result = _run(str(src), {input_name: _probe_batch(layout, batch, size)}, [output], src)[0]
    if result.ndim != 4 or result.shape[2] > size[0] or result.shape[3] > size[1]:
        raise InputError(f"{src}: output '{output}' has shape {list(result.shape)} for a "
                         f"{size[0]}×{size[1]} input, not a score map (N×classes×h×w, h and w "
                         f"at most the input's): give the score output with --score-output")
    return int(result.shape[2]), int(result.shape[3])


def _channels(src: Path, found: ForeignGraph) -> int:
    batch = _probe_batch(found.layout, found.batch or 1, found.probe)
    return int(_run(str(src), {found.input: batch}, [found.output], src)[0].shape[1])


def _probe_batch(layout: str, batch: int, size: tuple[int, int]) -> np.ndarray:
    shape = (batch, 3, *size) if layout == NCHW else (batch, *size, 3)
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _run(model: str, feed: dict, outputs: list[str] | None, src: Path) -> list:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        return session.run(outputs, feed)
    except Exception as exc:  # onnxruntime's own classes, all plain Exceptions
        raise ModelFormatError(f"{src}: onnxruntime cannot run it "
                               f"({str(exc).strip().splitlines()[0]})") from None


def _meta(src: Path, found: ForeignGraph, classes: tuple[str, ...], palette: tuple,
          options: ImportOptions) -> ArtifactMeta:
    """fcn-edge's metadata for the imported model; mean/std as the runtime applies them
    (on pixel / 255), checked in range with the flags named."""
    if not math.isfinite(options.scale) or options.scale <= 0:
        raise InputError(f"--scale {options.scale:g}: must be a positive number (255: pixels "
                         f"in 0..1; 1: pixel units)")
    factor = options.scale / 255.0
    mean = tuple(float(m) * factor for m in options.mean)
    std = tuple(float(s) * factor for s in options.std)
    if not all(MEAN_RANGE[0] <= m <= MEAN_RANGE[1] for m in mean) or \
            not all(STD_RANGE[0] <= s <= STD_RANGE[1] for s in std):
        raise InputError(f"--mean {' '.join(map(str, options.mean))} --std "
                         f"{' '.join(map(str, options.std))} with --scale {options.scale:g}: "
                         f"the mean must lie in 0..{255 / options.scale:g} and the std in "
                         f"{STD_RANGE[0] * 255 / options.scale:g}.."
                         f"{STD_RANGE[1] * 255 / options.scale:g} (pixel / scale units)")
    stride = max(1, round(found.probe[0] / found.grid[0]))
    if found.fixed:
        b = found.batch or 1
        shapes = Shapes((b, *found.fixed), (b, *found.fixed), (b, *found.fixed))
    else:
        shapes = default_shapes(None, 32)
        if found.batch:
            shapes = Shapes(*((found.batch, *s[1:]) for s in (shapes.min, shapes.opt, shapes.max)))
    return ArtifactMeta(
        model="imported", backbone=src.stem[:256] or "unknown", num_classes=len(classes),
        classes=classes, palette=palette, mean=mean, std=std, color_order=options.color,
        output_stride=min(stride, 512), shapes=shapes, source_sha256=file_sha256(src),
        fcn_edge_version=__version__,
        labels_dtype="uint8" if len(classes) <= 256 else "int32", argmax=options.argmax,
        raw_io=options.raw_io,
        export_options={"imported_from": src.name, "input": found.input,
                        "layout": found.layout, "score_output": found.output,
                        "upsampled": found.grid != found.probe, "scale": options.scale,
                        "given_mean": list(options.mean), "given_std": list(options.std),
                        **dict(options.provenance)})


def verify(src: Path, written: Path, found: ForeignGraph, meta: ArtifactMeta,
           shown: Path | None = None) -> None:
    """The written file against the original in ONNX Runtime on one input: every original
    output identical (with raw IO, within float32 rounding of the in-graph normalisation), the
    logits at the input's size, labels their argmax; then one frame through a Segmenter.
    Messages name ``shown`` (the output's real name), not the staged file."""
    shown = shown or written
    original, imported = _feeds(found, meta)
    before = dict(zip(_output_names(src), _run(str(src), {found.input: original}, None, src)))
    after = dict(zip(_output_names(written), _run(str(written), imported, None, shown)))
    renamed = {found.output: score_name(found)}
    for name, value in before.items():
        if not _same(value, after[renamed.get(name, name)], exact=not meta.raw_io):
            _bug(f"the imported graph's output '{name}' differs from the original's")
    n, c = before[found.output].shape[:2]
    if after[OUTPUT_LOGITS].shape != (n, c, *found.probe):
        _bug(f"the imported logits have shape {after[OUTPUT_LOGITS].shape}, not "
             f"{(n, c, *found.probe)}")
    if OUTPUT_LABELS in after and not np.array_equal(after[OUTPUT_LABELS],
                                                     after[OUTPUT_LOGITS].argmax(1)):
        _bug("the imported labels are not the argmax of its logits")
    _segment_one_frame(written, found, shown)


def _output_names(path: Path) -> list[str]:
    return [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]


def _segment_one_frame(written: Path, found: ForeignGraph, shown: Path) -> None:
    """One frame through a Segmenter on ONNX Runtime: labels at the frame's size."""
    from ..runtime.backends.onnxruntime import OnnxRuntimeBackend
    from ..runtime.segmenter import Segmenter

    frame = np.random.default_rng(1).integers(0, 256, (*found.probe, 3), np.uint8)
    try:
        with OnnxRuntimeBackend(written) as backend, Segmenter(backend) as seg:
            labels = seg(frame)
    except FcnEdgeError as exc:  # name the output, not its staged copy
        raise type(exc)(str(exc).replace(str(written), str(shown))) from None
    if labels.shape != frame.shape[:2]:
        _bug(f"the imported model's labels are {labels.shape} for a frame of {frame.shape[:2]}")


def _feeds(found: ForeignGraph, meta: ArtifactMeta) -> tuple[np.ndarray, dict]:
    """One input for the original and the same for the imported graph: noise, or with raw IO
    uint8 BGR frames and, for the original, the runtime's own normalisation of them."""
    n = found.batch or 1
    if meta.raw_io:
        frames = np.random.default_rng(0).integers(0, 256, (n, *found.probe, 3), np.uint8)
        images = frames_to_input(frames, meta.mean, meta.std, meta.color_order)
        original = images if found.layout == NCHW else images.transpose(0, 2, 3, 1).copy()
        return original, {INPUT_FRAMES: frames}
    batch = _probe_batch(found.layout, n, found.probe)
    images = batch if found.layout == NCHW else batch.transpose(0, 3, 1, 2).copy()
    return batch, {INPUT_IMAGES: images}


def _same(a: np.ndarray, b: np.ndarray, exact: bool) -> bool:
    if exact:
        return np.array_equal(a, b, equal_nan=True)
    return a.shape == b.shape and bool(np.abs(a - b).max(initial=0) <=
                                       1e-4 * max(1.0, float(np.abs(a).max(initial=0))))


def _bug(what: str) -> None:
    raise ModelFormatError(f"{what}: fcn-edge rewrote the model wrong (please report this "
                           f"bug); nothing was written")


__all__ = ["ImportOptions", "IMAGENET_MEAN", "IMAGENET_STD", "PROTOBUF_LIMIT", "import_onnx",
           "class_names", "inspect_graph", "needs_external_data", "rewrite", "verify"]
