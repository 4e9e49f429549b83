"""How much calibration ONNX Runtime's int8 quantizer can hold: a bound, not an OOM kill.

ORT's histogram calibrators (percentile, entropy: ``int8.py`` uses percentile) run every
calibration sample through a graph that outputs every activation, keep all of them, and only
then build the histograms. Their memory is samples × the activations of one inference. For the
paper's nets at a few hundred pixels that is small; torchvision's FCN-ResNet50 keeps 2048
channels at stride 8, about 1.5 GB of activations per 512×512 sample, so its default 32
calibration images asked for ~50 GB and the kernel killed the export (measured on a 24 GiB box).

:func:`fit_calibration` estimates one sample's activations from the graph (ONNX shape inference
at the samples' size, as ``flops.py`` counts FLOPs) and keeps as many samples as fit in half
the memory available now; when even one does not, the samples are centre-cropped to a size
that fits. What it did is said in one log line.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import onnx

from .flops import shapes_at

#: The share of the available memory the calibration may take (ORT, numpy and the model
#: itself need the rest).
BUDGET_SHARE = 0.5
#: Sides are cropped to multiples of this (the nets' coarsest stride) and no smaller.
_STRIDE = 32


def available_bytes() -> int:
    """Memory available now (Linux: free + reclaimable pages), or 8 GiB where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def activation_bytes(model: onnx.ModelProto | str | Path, height: int, width: int) -> int:
    """Bytes of every float activation one ``height``×``width`` inference produces."""
    inferred, shape_of = shapes_at(model, height, width)
    total = 0
    for node in inferred.graph.node:
        for name in node.output:
            shape = shape_of(name)
            if shape and all(isinstance(d, int) and d > 0 for d in shape):
                total += 4 * math.prod(shape)
    return total


def fit_calibration(samples: list, size: tuple[int, int], per_sample: Callable[[int, int], int],
                    budget: int) -> tuple[int, tuple[int, int] | None, str | None]:
    """How many of ``samples`` (all of ``size``) to keep, and the crop that fits, if any.

    Returns ``(count, crop, message)``: the samples to keep, a smaller (height, width) to
    centre-crop them to (None: keep their size), and the log line saying so (None when all
    samples fit as they are).
    """
    need = per_sample(*size)
    fits = budget // max(need, 1)
    if fits >= len(samples):
        return len(samples), None, None
    if fits >= 1:
        return fits, None, (f"int8: calibrating on {fits} of {len(samples)} images: ORT keeps "
                            f"every activation of every image ({need / 2**30:.1f} GiB each at "
                            f"{size[0]}×{size[1]}) and {budget / 2**30:.1f} GiB may be used")
    scale = math.sqrt(budget / need)
    crop = tuple(max(_STRIDE, int(side * scale) // _STRIDE * _STRIDE) for side in size)
    return 1, crop, (f"int8: calibrating on 1 image cropped to {crop[0]}×{crop[1]}: one "
                     f"{size[0]}×{size[1]} image's activations ({need / 2**30:.1f} GiB) exceed "
                     f"the {budget / 2**30:.1f} GiB that may be used")
