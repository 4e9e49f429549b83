"""What an exported artifact says about itself: the schema shared by the exporter and the runtime.

An ONNX file carries it in ``metadata_props`` (string → string; nested values as JSON), a
TensorRT engine in its header, a Triton model in its ``config.pbtxt`` parameters. With it,
``fcn-edge run model.onnx`` needs nothing else: class names, palette, preprocessing, the
tensors' names and layouts, the shapes the artifact was verified for, and where it came from.

``ArtifactMeta.from_dict``/``from_props`` parse it once, field by field (``fields.py``): a
missing or malformed field is one ``ModelFormatError`` naming it and the file. Inputs and heads
of multi-modal, multi-task artifacts are typed records (``InputInfo``, ``HeadInfo``) written to
the same JSON as before they were typed, so artifacts of format 1 read and write back alike.

This module is plain Python: the runtime imports it on boxes without torch or onnx.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

from ..errors import InputError, ModelFormatError
from .fields import (FieldReader, count, flag, height_width, integer, names, obj, one_of,
                     palette, text, three_floats)

FORMAT = "fcn-edge/onnx"
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
#: What to do about a malformed or outdated artifact.
EXPORT_AGAIN = "export it again with `fcn-edge export`"

#: Tensor names and layouts. Plain artifacts take normalised N×3×H×W float32 ``images`` in the
#: colour order the network was trained on; raw-IO artifacts take the frames OpenCV delivers,
#: N×H×W×3 uint8 BGR ``frames``, and normalise inside the graph. Plain artifacts give N×C×H×W
#: float32 ``logits``; argmax artifacts give N×H×W ``labels`` (uint8 up to 256 classes).
INPUT_IMAGES, INPUT_FRAMES = "images", "frames"
OUTPUT_LOGITS, OUTPUT_LABELS = "logits", "labels"
#: The memory layouts of an input tensor: channels first, or channels last (raw-IO frames).
NCHW, NHWC = "NCHW", "NHWC"
TENSOR_LAYOUTS = (NCHW, NHWC)
#: Models with more inputs (paper §5, RGB-D) take each modality as its own tensor, named after
#: it (``depth``: N×1×H×W, ``hha``: N×3×H×W, encoded by ``runtime.modalities``; raw IO changes
#: only the RGB input). Models with several heads give one output per task,
#: ``logits_<task>`` or ``labels_<task>``.


def input_tensor_name(modality: str, raw_io: bool) -> str:
    """The tensor that carries ``modality`` in an artifact."""
    if modality == "rgb":
        return INPUT_FRAMES if raw_io else INPUT_IMAGES
    return modality


def output_tensor_name(task: str | None, argmax: bool) -> str:
    """The tensor that carries ``task``'s scores or labels (``task=None``: a one-task model)."""
    base = OUTPUT_LABELS if argmax else OUTPUT_LOGITS
    return base if task is None else f"{base}_{task}"


@dataclass(frozen=True)
class Shapes:
    """An optimisation profile: (batch, height, width) at its minimum, optimum and maximum."""

    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            value = getattr(self, name)
            if len(value) != 3 or any(not isinstance(v, int) or v < 1 for v in value):
                raise InputError(f"shape {name}={value}: need three positive integers "
                                 f"(batch, height, width)")
        for axis, label in enumerate(("batch", "height", "width")):
            if not self.min[axis] <= self.opt[axis] <= self.max[axis]:
                raise InputError(f"shapes: {label} must satisfy min ≤ opt ≤ max, got "
                                 f"{self.min[axis]}, {self.opt[axis]}, {self.max[axis]}")

    def check_multiple(self, multiple: int) -> None:
        """Refuse heights/widths that are not multiples of ``multiple`` (1: any size)."""
        for name in ("min", "opt", "max"):
            _, h, w = getattr(self, name)
            if h % multiple or w % multiple:
                raise InputError(f"shapes: {name} {h}x{w} is not a multiple of {multiple}, "
                                 f"which this model's layout needs")

    def covers(self, batch: int, height: int, width: int) -> bool:
        return all(lo <= v <= hi for lo, v, hi in zip(self.min, (batch, height, width), self.max))

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Shapes":
        try:
            return cls(*(tuple(int(v) for v in data[k]) for k in ("min", "opt", "max")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"malformed shapes {data!r}: {exc}") from None

    def __str__(self) -> str:
        return ":".join("x".join(str(v) for v in s) for s in (self.min, self.opt, self.max))


_SHAPE = re.compile(r"^(?:(\d+)x)?(\d+)x(\d+)$")


def parse_shapes(text: str) -> Shapes:
    """``MIN:OPT:MAX``, each ``HxW`` (batch 1) or ``NxHxW``, e.g. ``256x256:512x512:1024x1024``."""
    parts = text.strip().lower().split(":")
    if len(parts) != 3:
        raise InputError(f"--shapes {text!r}: expected MIN:OPT:MAX, e.g. "
                         f"256x256:512x512:1024x1024 (HxW) or 1x256x256:4x512x512:8x1024x1024")
    dims = []
    for part in parts:
        match = _SHAPE.match(part.strip())
        if not match:
            raise InputError(f"--shapes {text!r}: {part!r} is not HxW or NxHxW")
        n, h, w = match.groups()
        dims.append((int(n or 1), int(h), int(w)))
    return Shapes(*dims)


def default_shapes(train_size: tuple[int, int] | None, stride: int = 32) -> Shapes:
    """Recommended profile: 32×32 up to 2048×2048, optimal at the training size (rounded up to
    the output stride), batch 1. Any size works with ONNX Runtime; the profile bounds TensorRT."""
    h, w = train_size or (512, 512)
    opt = tuple(min(2048, max(32, -(-v // stride) * stride)) for v in (h, w))
    return Shapes((1, 32, 32), (1,) + opt, (1, 2048, 2048))


@dataclass(frozen=True)
class DatasetInfo:
    """What a model was trained on — its ``--data`` spec, layout, training image size and, for
    procedural data, the scenes' difficulty — as the checkpoint records it and its artifacts
    carry it on. Every field may be unknown (None)."""

    spec: str | None = None
    layout: str | None = None
    image_size: tuple[int, int] | None = None    # (height, width): the export's optimal shape
    difficulty: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = {"spec": self.spec, "layout": self.layout, "image_size": self.image_size,
                "difficulty": self.difficulty}
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in data.items() if v is not None}  # unknown: left out, as written

    @classmethod
    def read(cls, read: FieldReader) -> "DatasetInfo":
        return cls(spec=read("spec", text, None), layout=read("layout", text, None),
                   image_size=read("image_size", height_width, None),
                   difficulty=read("difficulty", text, None))


@dataclass(frozen=True)
class InputInfo:
    """One input tensor of a multi-modal artifact (paper §5), in the model's channel order."""

    name: str                  # the tensor (``images``, ``frames``, ``depth``, ``hha``)
    modality: str              # rgb | depth | hha
    channels: int
    layout: str                # NCHW | NHWC (raw-IO RGB frames)
    dtype: str                 # float32 | uint8 (raw-IO RGB frames)
    #: How values were encoded, for other runtimes: a sentence, or depth's figures (a dict).
    encoding: str | dict | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.encoding is None:
            del data["encoding"]  # as artifacts without one were written
        return data

    @classmethod
    def read(cls, read: FieldReader) -> "InputInfo":
        return cls(name=read("name", text), modality=read("modality", text),
                   channels=read("channels", count),
                   layout=read("layout", one_of(*TENSOR_LAYOUTS)),
                   dtype=read("dtype", one_of("float32", "uint8")),
                   encoding=read("encoding", _encoding, None))


@dataclass(frozen=True)
class HeadInfo:
    """One output of a multi-task artifact (paper §5), in the model's head order."""

    task: str
    output: str                # the tensor: logits_<task> or labels_<task>
    num_classes: int
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]   # RGB, one per class
    labels_dtype: str = "uint8"                 # of the labels output, with argmax
    metrics: dict = field(default_factory=dict)  # the task's validation metrics

    def __post_init__(self) -> None:
        if len(self.classes) != self.num_classes:  # (labels without a colour are black)
            raise ModelFormatError(f"head {self.task!r} has {self.num_classes} classes but "
                                   f"{len(self.classes)} names")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, read: FieldReader, labels_dtype: str) -> "HeadInfo":
        """``labels_dtype``: the artifact's, for heads written before each had its own."""
        values = dict(task=read("task", text), output=read("output", text),
                      num_classes=read("num_classes", count), classes=read("classes", names),
                      palette=read("palette", palette),
                      labels_dtype=read("labels_dtype", text, labels_dtype),
                      metrics=read("metrics", obj, {}))
        try:
            return cls(**values)
        except ModelFormatError as exc:  # classes that disagree with the count
            raise read.error(None, str(exc)) from None


def _encoding(value: Any) -> str | dict:
    if not isinstance(value, (str, Mapping)):
        raise TypeError("must be a string or an object")
    return value if isinstance(value, str) else dict(value)


@dataclass(frozen=True)
class ArtifactMeta:
    """Everything a runtime needs to use an artifact, and where it came from."""

    model: str                                   # fcn32s | fcn16s | fcn8s
    backbone: str
    num_classes: int
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    color_order: str = "rgb"                     # channel order the network was trained on
    output_stride: int = 8
    size_multiple: int = 1                       # heights/widths must be multiples of this
    raw_io: bool = False                         # uint8 BGR NHWC frames in, normalised inside
    argmax: bool = False                         # labels out instead of logits
    precision: str = "fp32"
    labels_dtype: str = "uint8"                  # of the labels output, with argmax
    shapes: Shapes = field(default_factory=lambda: default_shapes(None))
    ignore_index: int = 255
    model_options: dict = field(default_factory=dict)   # ModelConfig.to_dict()
    source_sha256: str = ""
    fcn_edge_version: str = ""
    export_options: dict = field(default_factory=dict)
    parity: dict = field(default_factory=dict)          # figures measured by the export
    dataset: DatasetInfo = field(default_factory=DatasetInfo)
    metrics: dict = field(default_factory=dict)         # the checkpoint's validation metrics
    #: Multi-modal models: one entry per input tensor, in the model's channel order.
    #: Empty: RGB only.
    inputs: tuple[InputInfo, ...] = ()
    #: Multi-task models: one entry per head, in the model's order; the first head is also
    #: described by ``classes``/``palette`` above. Empty: one task.
    heads: tuple[HeadInfo, ...] = ()

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ModelFormatError(f"precision {self.precision!r} is not one of {PRECISIONS}")
        if self.color_order not in ("rgb", "bgr"):
            raise ModelFormatError(f"color_order {self.color_order!r} must be 'rgb' or 'bgr'")
        if len(self.classes) != self.num_classes or len(self.palette) < self.num_classes:
            raise ModelFormatError(f"{self.num_classes} classes but {len(self.classes)} names "
                                   f"and {len(self.palette)} palette colours")
        if not isinstance(self.dataset, DatasetInfo) or \
                not all(isinstance(i, InputInfo) for i in self.inputs) or \
                not all(isinstance(h, HeadInfo) for h in self.heads):
            raise TypeError("ArtifactMeta takes dataset as DatasetInfo, inputs as InputInfo and "
                            "heads as HeadInfo")

    @property
    def input_name(self) -> str:
        """The RGB input tensor (``images`` or ``frames``)."""
        return INPUT_FRAMES if self.raw_io else INPUT_IMAGES

    @property
    def output_name(self) -> str:
        """The (first head's) output tensor."""
        return self.output_names[0]

    @property
    def input_names(self) -> tuple[str, ...]:
        """Every input tensor, in the model's channel order."""
        return tuple(i.name for i in self.inputs) or (self.input_name,)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Every output tensor, one per head."""
        if self.heads:
            return tuple(h.output for h in self.heads)
        return (OUTPUT_LABELS if self.argmax else OUTPUT_LOGITS,)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The input modalities in channel order (``("rgb",)`` for an RGB model)."""
        return tuple(i.modality for i in self.inputs) or ("rgb",)

    def input_tensors(self) -> tuple[tuple[str, str, int, str], ...]:
        """``(name, layout, channels, dtype)`` of every input tensor, in order."""
        if self.inputs:
            return tuple((i.name, i.layout, i.channels, i.dtype) for i in self.inputs)
        if self.raw_io:
            return ((self.input_name, NHWC, 3, "uint8"),)
        return ((self.input_name, NCHW, 3, "float32"),)

    def output_tensors(self) -> tuple[tuple[str, int, str], ...]:
        """``(name, classes, dtype)`` of every output tensor, one per head: labels (N×H×W, the
        head's labels dtype) with argmax, else logits (N×classes×H×W float32)."""
        heads = [(h.output, h.num_classes, h.labels_dtype) for h in self.heads] or \
            [(self.output_names[0], self.num_classes, self.labels_dtype)]
        return tuple((name, n, dtype if self.argmax else "float32") for name, n, dtype in heads)

    @property
    def tasks(self) -> dict[str, HeadInfo]:
        """Head description by task; an empty dict for a one-task model."""
        return {h.task: h for h in self.heads}

    def with_(self, **changes: Any) -> "ArtifactMeta":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shapes"] = self.shapes.to_json()
        data["dataset"] = self.dataset.to_json()
        data["inputs"] = [i.to_json() for i in self.inputs]
        data["heads"] = [h.to_json() for h in self.heads]
        return data

    def to_props(self) -> dict[str, str]:
        """ONNX ``metadata_props``: every value a string, structured ones as JSON."""
        props = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
        for key, value in self.to_dict().items():
            props[key] = value if isinstance(value, str) else json.dumps(value)
        return props

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "the artifact") -> "ArtifactMeta":
        """Parse and check metadata as ``to_dict`` wrote it; a missing or malformed field is
        a ModelFormatError naming it and ``source``. Unknown fields are ignored."""
        read = FieldReader(data, source, EXPORT_AGAIN)
        missing = sorted(k for k in _REQUIRED_FIELDS if k not in data)
        if missing:
            raise ModelFormatError(f"{source}: artifact metadata lacks {missing}; {EXPORT_AGAIN}")
        values = {key: read(key, parse) for key, parse in _REQUIRED_FIELDS.items()}
        values.update({key: read(key, parse) for key, parse in _OPTIONAL_FIELDS.items()
                       if key in data})
        values["dataset"] = DatasetInfo.read(read.nested("dataset"))
        values["inputs"] = tuple(InputInfo.read(item) for item in read.each("inputs"))
        labels = values.get("labels_dtype", "uint8")
        values["heads"] = tuple(HeadInfo.read(item, labels) for item in read.each("heads"))
        try:
            return cls(**values)
        except ModelFormatError as exc:  # fields that disagree with each other
            raise ModelFormatError(f"{source}: {exc}; {EXPORT_AGAIN}") from None

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "the artifact") -> "ArtifactMeta":
        """Parse ``metadata_props`` (as ``to_props`` wrote them), checking the format version."""
        if props.get("format") != FORMAT:
            raise ModelFormatError(f"{source} was not exported by fcn-edge (no '{FORMAT}' "
                                   f"metadata); export it with `fcn-edge export CHECKPOINT`")
        version = props.get("format_version", "?")
        if version != str(FORMAT_VERSION):
            raise ModelFormatError(f"{source} has fcn-edge artifact format {version}; this "
                                   f"fcn-edge reads format {FORMAT_VERSION}: export it again")
        data: dict[str, Any] = {}
        for key, value in props.items():
            if key in ("format", "format_version"):
                continue
            try:
                data[key] = json.loads(value)
            except json.JSONDecodeError:
                data[key] = value  # plain strings were stored as they are
        # Strings that happen to parse as JSON numbers stay strings where the schema says so.
        for key in ("model", "backbone", "color_order", "precision", "labels_dtype",
                    "source_sha256", "fcn_edge_version"):
            if key in data and not isinstance(data[key], str):
                data[key] = str(props[key])
        return cls.from_dict(data, source)


def _shapes(value: Any) -> Shapes:
    try:
        return Shapes.from_json(obj(value))
    except (ModelFormatError, InputError):
        raise ValueError("must be {min, opt, max}, each [batch, height, width] with "
                         "min ≤ opt ≤ max") from None


#: How each field of the metadata is read (``from_dict``): those an artifact must have …
_REQUIRED_FIELDS = {"model": text, "backbone": text, "num_classes": count, "classes": names,
                    "palette": palette, "mean": three_floats, "std": three_floats}
#: … and those with a default; ``dataset``, ``inputs`` and ``heads`` are read by their classes.
_OPTIONAL_FIELDS = {"color_order": one_of("rgb", "bgr"), "output_stride": count,
                    "size_multiple": count, "raw_io": flag, "argmax": flag,
                    "precision": one_of(*PRECISIONS), "labels_dtype": text, "shapes": _shapes,
                    "ignore_index": integer, "model_options": obj, "source_sha256": text,
                    "fcn_edge_version": text, "export_options": obj, "parity": obj,
                    "metrics": obj}

