"""What a Triton client sends an fcn-edge model and what it gets back: the wire contract.

One contract for every server that runs :mod:`fcn_edge.serve.python_model`: ``fcn-edge serve``
(the tritonserver PyTriton bundles) and any stock Triton given a repository from ``fcn-edge
export --triton-repo DIR --triton-platform python``.

Inputs, per request (the model's ``max_batch_size`` is at least 1, so each tensor has a leading
batch axis N, usually 1; one request's frames share one size):

* ``frame``: N×H×W×3 ``UINT8`` pixels, or ``image``: N×1 ``BYTES``, each an encoded JPEG or
  PNG -- exactly one of the two;
* one more per extra modality the artifact takes, named after it (``depth``: N×H×W ``FP32``
  metres; ``hha``: N×H×W×3 ``UINT8``), at the frame's size.

The request parameter ``color_order`` says the channel order of ``frame``: ``bgr`` (OpenCV's,
the default) or ``rgb``. Outputs: ``labels`` (N×H×W, ``UINT8`` up to 256 classes, else
``INT32``) at each frame's own size, or ``labels_<task>`` per head of a multi-head artifact.
The model's config ``parameters`` hold the artifact's metadata as its ONNX ``metadata_props``
hold it, so a client rebuilds classes and palette with ``ArtifactMeta.from_props``.

Triton itself refuses a tensor of another type or rank, or with another channel count, before
the model sees it; what it lets through and a model must refuse (an empty or oversized frame,
an undecodable image, neither or both of ``frame`` and ``image``) is checked here: one line
that says what was wrong and what to send.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..runtime.heads import Head, heads_of
from ..runtime.metadata import ArtifactMeta
from ..runtime.segmenter import COLORS

FRAME, IMAGE = "frame", "image"
COLOR_PARAMETER = "color_order"
#: Per extra modality: (Triton type, dims after the batch axis), for a request's tensor.
_EXTRA_TENSORS = {1: ("TYPE_FP32", (-1, -1)), 3: ("TYPE_UINT8", (-1, -1, 3))}
_TRITON_LABELS = {np.dtype(np.uint8): "TYPE_UINT8", np.dtype(np.int32): "TYPE_INT32"}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the served model, as its ``config.pbtxt`` declares it."""

    name: str
    data_type: str           # Triton's enum name: TYPE_UINT8, TYPE_STRING …
    dims: tuple[int, ...]    # after the batch axis; -1 for any size
    optional: bool = False


@dataclass(frozen=True)
class Limits:
    """What one request may hold: a side of at most ``max_side`` pixels (a frame, or an image
    once decoded: its header is read first, so a small file claiming a huge picture is refused
    before it is decoded) and encoded images of at most ``max_image_bytes``."""

    max_side: int = 8192
    max_image_bytes: int = 32 << 20

    def __post_init__(self) -> None:
        if not (16 <= self.max_side <= 1 << 16 and 1 <= self.max_image_bytes <= 1 << 31):
            raise InputError(f"limits out of range: max_side {self.max_side} (16 … 65536), "
                             f"max_image_bytes {self.max_image_bytes} (1 … 2 GiB)")


@dataclass(frozen=True)
class Decoded:
    """A request's frames (H×W×3 uint8, BGR, one size) and their extra modalities."""

    frames: list[np.ndarray]
    extras: dict[str, list[np.ndarray]]


def output_name(task: str | None) -> str:
    """``labels``, or ``labels_<task>`` for one head of a multi-head artifact."""
    return "labels" if task is None else f"labels_{task}"


def extra_modalities(meta: ArtifactMeta) -> tuple[str, ...]:
    """The modalities a request sends besides the frame (``("depth",)`` for RGB-D)."""
    return tuple(m for m in meta.modalities if m != "rgb")


def input_specs(meta: ArtifactMeta) -> tuple[TensorSpec, ...]:
    """``frame`` and ``image`` (one of them per request), then one tensor per extra modality."""
    channels = {i.modality: i.channels for i in meta.inputs}
    specs = [TensorSpec(FRAME, "TYPE_UINT8", (-1, -1, 3), optional=True),
             TensorSpec(IMAGE, "TYPE_STRING", (1,), optional=True)]
    for modality in extra_modalities(meta):
        if channels[modality] not in _EXTRA_TENSORS:
            raise InputError(f"modality {modality!r} has {channels[modality]} channels; a served "
                             f"model takes extra inputs of 1 or 3 channels")
        data_type, dims = _EXTRA_TENSORS[channels[modality]]
        specs.append(TensorSpec(modality, data_type, dims))
    return tuple(specs)


def output_specs(meta: ArtifactMeta) -> tuple[TensorSpec, ...]:
    """One labels tensor per head, in the labels' dtype."""
    return tuple(TensorSpec(output_name(h.task), _TRITON_LABELS[h.dtype], (-1, -1))
                 for h in heads_of(meta))


def decode_request(inputs: Mapping[str, np.ndarray | None], parameters: Mapping[str, Any],
                   meta: ArtifactMeta, limits: Limits = Limits()) -> Decoded:
    """A request's tensors (name → array as Triton delivers it, None where absent) and
    parameters → its frames in BGR and their extra inputs; an InputError (one line) otherwise."""
    frame, image = inputs.get(FRAME), inputs.get(IMAGE)
    if (frame is None) == (image is None):
        raise InputError(f"send exactly one of '{FRAME}' (N×H×W×3 uint8 pixels) and "
                         f"'{IMAGE}' (N×1 encoded JPEG/PNG bytes), "
                         f"{'not both' if frame is not None else 'got neither'}")
    if frame is not None:
        frames = _frames(frame, _color_order(parameters), limits)
    else:
        frames = _images(image, limits)
    extras = {m: _extra(m, inputs.get(m), frames) for m in extra_modalities(meta)}
    return Decoded(frames, extras)


def response_arrays(results: Sequence[Any], meta: ArtifactMeta) -> dict[str, np.ndarray]:
    """One request's Segmenter results (one per frame, one size) → output name → N×H×W."""
    return {output_name(h.task): np.stack([_of(r, h) for r in results])
            for h in heads_of(meta)}


def _of(result: Any, head: Head) -> np.ndarray:
    return result[head.task] if isinstance(result, Mapping) else result


def _color_order(parameters: Mapping[str, Any]) -> str:
    order = parameters.get(COLOR_PARAMETER, "bgr")
    if not isinstance(order, str) or order.lower() not in COLORS:
        raise InputError(f"parameter {COLOR_PARAMETER}={order!r}: use 'bgr' or 'rgb'")
    return order.lower()


def _frames(batch: np.ndarray, order: str, limits: Limits) -> list[np.ndarray]:
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != 3:
        raise InputError(f"'{FRAME}' must be N×H×W×3 uint8, got {batch.dtype} {batch.shape}")
    _check_size(batch.shape[1:3], limits, FRAME)
    if batch.shape[0] == 0:
        raise InputError(f"'{FRAME}' holds no frame (batch of 0)")
    return [f[..., ::-1] if order == "rgb" else f for f in batch]


def _images(batch: np.ndarray, limits: Limits) -> list[np.ndarray]:
    items = batch.reshape(-1)
    if items.size == 0:
        raise InputError(f"'{IMAGE}' holds no image (batch of 0)")
    frames = [_decode(item, i, limits) for i, item in enumerate(items)]
    if len({f.shape for f in frames}) > 1:
        raise InputError(f"the images of one request must share one size, got "
                         f"{sorted({f.shape[:2] for f in frames})}: send them as requests")
    return frames


def _decode(item: Any, index: int, limits: Limits) -> np.ndarray:
    import cv2

    data = item if isinstance(item, bytes) else bytes(item)
    what = f"'{IMAGE}'[{index}]"
    if not data:
        raise InputError(f"{what} is empty: send the bytes of a JPEG or PNG file")
    if len(data) > limits.max_image_bytes:
        raise InputError(f"{what} is {len(data)} bytes; at most {limits.max_image_bytes} "
                         f"are taken: send a smaller image")
    _check_size(_header_size(data, what, limits), limits, what)
    frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if frame is None or frame.size == 0:
        raise InputError(f"{what} ({len(data)} bytes) is not a readable JPEG or PNG: send "
                         f"the file's bytes as they are")
    return frame


def _header_size(data: bytes, what: str, limits: Limits) -> tuple[int, int]:
    """(H, W) from the image's header, read without decoding the pixels (Pillow)."""
    from io import BytesIO

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(BytesIO(data)) as image:
            kind, size = image.format, (image.height, image.width)
    except Image.DecompressionBombError:
        raise InputError(f"{what} claims more pixels than Pillow decodes; sides of at most "
                         f"{limits.max_side} are taken: resize it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InputError(f"{what} ({len(data)} bytes) is not a readable JPEG or PNG: send "
                         f"the file's bytes as they are") from None
    if kind not in ("JPEG", "PNG"):
        raise InputError(f"{what} is a {kind} image: send JPEG or PNG")
    return size


def _check_size(size: Sequence[int], limits: Limits, what: str) -> None:
    h, w = int(size[0]), int(size[1])
    if h == 0 or w == 0:
        raise InputError(f"{what} is empty ({h}×{w} pixels): send a frame with pixels")
    if max(h, w) > limits.max_side:
        raise InputError(f"{what} is {w}×{h} pixels; sides of at most {limits.max_side} are "
                         f"taken: resize it first")


def _extra(modality: str, batch: np.ndarray | None, frames: list[np.ndarray]
           ) -> list[np.ndarray]:
    """The request's ``modality`` tensor, one array per frame (checked by the Segmenter)."""
    if batch is None:
        raise InputError(f"this model also takes '{modality}' (N×H×W at the frame's size): "
                         f"send it with the frame")
    if batch.ndim < 3 or batch.shape[0] != len(frames):
        raise InputError(f"'{modality}' must hold one array per frame ({len(frames)}), got "
                         f"shape {batch.shape}")
    return list(batch)
