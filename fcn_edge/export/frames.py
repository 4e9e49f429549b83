"""Frames to feed an artifact, without torch: the export's parity checks and the TensorRT
build's accuracy gate (``trt_gate``) make their inputs here.

The gate runs on the deployment target — a Jetson box may have TensorRT and ONNX Runtime but no
torch — so this module imports numpy, OpenCV (through ``fcn_edge.data``) and the runtime only,
never torch, directly or through another module (a test asserts it). ``parity`` re-exports these
names for the export, whose reference side needs torch.

The artifact is fed as a runtime would feed it, from its own metadata (``artifact_feed``: the
runtime's own preprocessing), so metadata written wrong shows in what the artifact computes.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np

from ..data.nyud import hha_from_depth, with_hha
from ..data.procedural import render_scene
from ..data.procedural_multi import depth_for_scene
from ..runtime.metadata import ArtifactMeta
from ..runtime.modalities import encode_input
from ..runtime.processing import frames_to_input

#: An artifact run: its input tensors by name → its output tensors by name.
Infer = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def scene_arrays(meta: ArtifactMeta, sizes: Iterable[tuple[int, int]], seed: int = 2024
                 ) -> list[dict[str, np.ndarray]]:
    """Procedural scenes, one per size, deterministic, with every modality ``meta`` takes, by
    name: ``rgb`` (RGB uint8), ``depth`` (metres, the procedural RGB-D model's) and ``hha``
    (computed from that depth)."""
    rng = np.random.default_rng(seed)
    out = []
    for index, (h, w) in enumerate(sizes):
        image, mask = render_scene(rng, h, w)
        arrays = {"rgb": image}
        if {"depth", "hha"} & set(meta.modalities):
            depth = depth_for_scene(np.random.default_rng([seed, index]), mask)
            arrays["depth"] = depth
            if "hha" in meta.modalities:
                arrays["hha"] = hha_from_depth(depth)
        out.append(arrays)
    return out


def sample_arrays(sample, modalities: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """A data set ``Sample``'s modalities by name (``rgb`` is its image); HHA is computed from
    the sample's depth when ``modalities`` asks for it and the data set has only depth."""
    return {"rgb": sample.image, **(with_hha(sample, tuple(modalities)).inputs or {})}


def artifact_feed(meta: ArtifactMeta, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the artifact takes for one example, by input tensor, made by the runtime's own
    preprocessing: BGR uint8 frames (raw IO) or the normalised N×3×H×W batch for RGB, the
    encoded N×c×H×W arrays for depth and HHA."""
    feed = {}
    for modality, name in zip(meta.modalities, meta.input_names):
        if modality == "rgb":
            bgr = np.ascontiguousarray(arrays["rgb"][..., ::-1])[None]
            feed[name] = bgr if meta.raw_io else frames_to_input(
                bgr, meta.mean, meta.std, meta.color_order, frame_order="bgr")
        else:
            feed[name] = encode_input(modality, arrays[modality], meta.mean, meta.std)
    return feed


def artifact_input(meta: ArtifactMeta, image_rgb: np.ndarray) -> np.ndarray:
    """The one input of an RGB artifact for one RGB image (see ``artifact_feed``)."""
    return artifact_feed(meta, {"rgb": image_rgb})[meta.input_name]
