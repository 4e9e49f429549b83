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
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

from ..errors import InputError, ModelFormatError
from .fields import (REQUIRED, FieldReader, bounded, check_values, flag, height_width, name,
                     name_list, obj, one_of, palette, text, three_in)
from .shapes import MAX_BATCH, MAX_SIDE, Shapes, default_shapes, parse_shapes  # noqa: F401

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
LABELS_DTYPES = ("uint8", "int32")

#: Bounds on what an artifact may say, checked when it is parsed or built: past them a file is
#: garbage, not a model (a size multiple of 4096 made a 64×96 frame run at 4096×4096).
MAX_CLASSES = 1 << 16      # labels are int32 past 256 classes; no data set has more than this
MAX_STRIDE = 512           # output stride and size multiple (FCN's strides are 8 to 32)
MAX_CHANNELS = 64          # of one input tensor (RGB and HHA 3, depth 1)
#: mean and std normalise pixel / 255, a value in 0..1 (a std of 1/255 keeps pixel units).
MEAN_RANGE, STD_RANGE = (0.0, 1.0), (0.001, 10.0)


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
        return cls(**{key: read(key, parse, None if key == "encoding" else REQUIRED)
                      for key, parse in _INPUT_FIELDS.items()})


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
        if len(self.classes) != self.num_classes or len(self.palette) < self.num_classes:
            raise ModelFormatError(f"head {self.task!r} has {self.num_classes} classes but "
                                   f"{len(self.classes)} names and {len(self.palette)} colours")
        _check_labels_dtype(self.labels_dtype, self.num_classes, f"head {self.task!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, read: FieldReader, labels_dtype: str) -> "HeadInfo":
        """``labels_dtype``: the artifact's, for heads written before each had its own."""
        defaults = {"labels_dtype": labels_dtype, "metrics": {}}
        values = {key: read(key, parse, defaults.get(key, REQUIRED))
                  for key, parse in _HEAD_FIELDS.items()}
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
        """Every field's type and range (the parsers ``from_dict`` reads with, so metadata
        built in code — the exporter's, a checkpoint's — is held to what a file is), then
        the fields against each other."""
        if not isinstance(self.dataset, DatasetInfo) or \
                not all(isinstance(i, InputInfo) for i in self.inputs) or \
                not all(isinstance(h, HeadInfo) for h in self.heads):
            raise TypeError("ArtifactMeta takes dataset as DatasetInfo, inputs as InputInfo and "
                            "heads as HeadInfo")
        check_values(self, {**_REQUIRED_FIELDS, **_OPTIONAL_FIELDS})
        for i, info in enumerate(self.inputs):
            check_values(info, _INPUT_FIELDS, f"inputs[{i}]")
        for i, head in enumerate(self.heads):
            check_values(head, _HEAD_FIELDS, f"heads[{i}]")
        if len(self.classes) != self.num_classes or len(self.palette) < self.num_classes:
            raise ModelFormatError(f"{self.num_classes} classes but {len(self.classes)} names "
                                   f"and {len(self.palette)} palette colours (metadata fields "
                                   f"'num_classes', 'classes', 'palette': a name and a colour "
                                   f"per class)")
        _check_labels_dtype(self.labels_dtype, self.num_classes, "the artifact")
        if not self.shapes.holds_multiple(self.size_multiple):
            raise ModelFormatError(f"metadata field 'size_multiple' is {self.size_multiple} but "
                                   f"no height or width of 'shapes' {self.shapes} is a "
                                   f"multiple of it: no frame could run")
        _check_inputs(self.inputs, self.raw_io)
        _check_heads(self.heads, self.num_classes)

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
    def int8_target(self) -> str | None:
        """An int8 export's flavour as its export recorded it: ``cpu`` (ONNX Runtime's
        asymmetric uint8) or ``tensorrt`` (symmetric int8 Q/DQ); None when the artifact is not
        int8 or says nothing (``parity["target"]``, else ``export_options["int8_target"]``)."""
        if self.precision != "int8":
            return None
        return self.parity.get("target") or self.export_options.get("int8_target")

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
            except (ValueError, TypeError, RecursionError):  # bad JSON, 5000-digit numbers,
                data[key] = value  # deep nesting: plain strings, checked field by field
        # Strings that happen to parse as JSON numbers stay strings where the schema says so.
        for key in ("model", "backbone", "color_order", "precision", "labels_dtype",
                    "source_sha256", "fcn_edge_version"):
            if key in data and not isinstance(data[key], str):
                data[key] = str(props[key])
        return cls.from_dict(data, source)


def _check_labels_dtype(dtype: str, classes: int, what: str) -> None:
    if dtype == "uint8" and classes > 256:
        raise ModelFormatError(f"{what} has {classes} classes but uint8 labels (metadata field "
                               f"'labels_dtype'), which hold 256")


def _check_inputs(inputs: tuple[InputInfo, ...], raw_io: bool) -> None:
    """Each input tensor is named, laid out and typed as the exporter makes it for its
    modality (raw IO: uint8 NHWC frames for RGB only), once per modality, RGB in 3 channels."""
    for i, info in enumerate(inputs):
        raw = info.modality == "rgb" and raw_io
        expected = (input_tensor_name(info.modality, raw_io), NHWC if raw else NCHW,
                    "uint8" if raw else "float32")
        if (info.name, info.layout, info.dtype) != expected or \
                (info.modality == "rgb" and info.channels != 3) or \
                [m.modality for m in inputs].count(info.modality) > 1:
            raise ModelFormatError(
                f"metadata field 'inputs[{i}]' ({info.name} {info.layout} {info.dtype}, "
                f"{info.channels} channels) is not a {info.modality} input of this artifact "
                f"(once per modality: {' '.join(expected)}{', 3 channels' if info.modality == 'rgb' else ''})")


def _check_heads(heads: tuple[HeadInfo, ...], num_classes: int) -> None:
    """One head per task, each with its own output; the first is the head the top-level
    classes describe."""
    for i, head in enumerate(heads):
        if [h.task for h in heads].count(head.task) > 1 or \
                [h.output for h in heads].count(head.output) > 1:
            raise ModelFormatError(f"metadata field 'heads[{i}]' (task {head.task!r}, output "
                                   f"{head.output!r}) repeats another head's task or output")
    if heads and heads[0].num_classes != num_classes:
        raise ModelFormatError(f"metadata field 'heads[0].num_classes' is "
                               f"{heads[0].num_classes} but 'num_classes' is {num_classes}")


def _shapes(value: Any) -> Shapes:
    if isinstance(value, Shapes):
        return value
    try:
        return Shapes.from_json(obj(value))
    except (ModelFormatError, InputError):
        raise ValueError("must be {min, opt, max}, each [batch, height, width] with "
                         "min ≤ opt ≤ max") from None


#: How each field of the metadata is read (``from_dict``) and checked (``__post_init__``):
#: those an artifact must have …
_CLASS_COUNT, _CLASS_NAMES = bounded(1, MAX_CLASSES), name_list(MAX_CLASSES)
_REQUIRED_FIELDS = {"model": name, "backbone": name, "num_classes": _CLASS_COUNT,
                    "classes": _CLASS_NAMES, "palette": palette, "mean": three_in(*MEAN_RANGE),
                    "std": three_in(*STD_RANGE)}
#: … and those with a default; ``dataset``, ``inputs`` and ``heads`` are read by their classes.
_OPTIONAL_FIELDS = {"color_order": one_of("rgb", "bgr"), "output_stride": bounded(1, MAX_STRIDE),
                    "size_multiple": bounded(1, MAX_STRIDE), "raw_io": flag, "argmax": flag,
                    "precision": one_of(*PRECISIONS), "labels_dtype": one_of(*LABELS_DTYPES),
                    "shapes": _shapes, "ignore_index": bounded(-(1 << 31), (1 << 31) - 1),
                    "model_options": obj, "source_sha256": text, "fcn_edge_version": text,
                    "export_options": obj, "parity": obj, "metrics": obj}
#: The fields of one input and of one head.
_INPUT_FIELDS = {"name": name, "modality": name, "channels": bounded(1, MAX_CHANNELS),
                 "layout": one_of(*TENSOR_LAYOUTS), "dtype": one_of("float32", "uint8"),
                 "encoding": _encoding}
_HEAD_FIELDS = {"task": name, "output": name, "num_classes": _CLASS_COUNT,
                "classes": _CLASS_NAMES, "palette": palette,
                "labels_dtype": one_of(*LABELS_DTYPES), "metrics": obj}

