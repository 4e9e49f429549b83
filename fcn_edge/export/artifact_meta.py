"""The metadata of an export, gathered from the checkpoint and the export options."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from .. import __version__
from ..io import file_sha256
from ..models.checkpoint import CheckpointMeta, checkpoint_meta
from ..runtime.metadata import (NCHW, NHWC, ArtifactMeta, HeadInfo, InputInfo, Shapes,
                                default_shapes, input_tensor_name, output_tensor_name)
from ..runtime.palette import voc_colours
from ..runtime.modalities import get_modality
from .graph import head_labels_dtype


def artifact_meta(model: nn.Module, checkpoint: Path, *, raw_io: bool, argmax: bool,
                  shapes: Shapes | None, options: dict,
                  labels_dtype: str = "auto") -> ArtifactMeta:
    """Describe the fp32 artifact of ``model`` (loaded from ``checkpoint`` by ``load_model``).

    A bare state dict has no ``meta``: classes are then named ``class_0`` …, coloured with the
    VOC palette, and normalised with ImageNet statistics (what its backbone was trained with).
    ``labels_dtype`` (``auto``, ``uint8``, ``int32``) is what an argmax graph's labels leave in.
    """
    config, meta = model.config, checkpoint_meta(model)
    n = config.num_classes
    return ArtifactMeta(
        model=config.name, backbone=config.backbone, num_classes=n,
        classes=meta.classes or tuple(f"class_{i}" for i in range(n)),
        palette=_colours(meta.palette, n), mean=meta.mean, std=meta.std,
        color_order=meta.color_order, output_stride=config.output_stride,
        raw_io=raw_io, argmax=argmax, labels_dtype=head_labels_dtype(n, labels_dtype).name,
        shapes=shapes or default_shapes(meta.dataset.image_size, 32),
        ignore_index=meta.ignore_index, model_options=config.to_dict(),
        source_sha256=file_sha256(checkpoint), fcn_edge_version=__version__,
        export_options=options, dataset=meta.dataset,
        metrics=_summary(meta.metrics), inputs=_inputs(config, raw_io),
        heads=_heads(config, meta, argmax, labels_dtype))


def _inputs(config, raw_io: bool) -> tuple[InputInfo, ...]:
    """One entry per input tensor for multi-modal models (paper §5); none for RGB only."""
    if config.input_names == ("rgb",):
        return ()
    out = []
    for modality, channels in config.inputs:
        raw = modality == "rgb" and raw_io
        out.append(InputInfo(name=input_tensor_name(modality, raw_io), modality=modality,
                             channels=channels, layout=NHWC if raw else NCHW,
                             dtype="uint8" if raw else "float32",
                             encoding="uint8 BGR frames" if raw else
                             get_modality(modality).encoding or None))
    return tuple(out)


def _heads(config, meta: CheckpointMeta, argmax: bool, labels_dtype: str
           ) -> tuple[HeadInfo, ...]:
    """One entry per head for multi-task models (paper §5); none for one task. Class names,
    colours and validation metrics per task come from the checkpoint's ``tasks`` meta."""
    out = []
    for task, n in config.heads:
        info = meta.task_meta(task)
        out.append(HeadInfo(task=task, output=output_tensor_name(task, argmax), num_classes=n,
                            classes=info.classes or tuple(f"{task}_{i}" for i in range(n)),
                            palette=_colours(info.palette, n),
                            labels_dtype=head_labels_dtype(n, labels_dtype).name,
                            metrics=_summary(info.metrics)))
    return tuple(out)


def _colours(palette: tuple, n: int) -> tuple[tuple[int, int, int], ...]:
    """The first ``n`` colours of ``palette``, or of the VOC palette when it has none."""
    return tuple(palette[:n]) if palette else voc_colours(n)


def _summary(metrics: dict | None) -> dict:
    """The checkpoint's four validation metrics (per-class figures stay in the checkpoint)."""
    keys = ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou")
    return {k: metrics[k] for k in keys if k in (metrics or {})}
