"""The FCN skip architecture (paper §4.2, Figure 3), shared by every backbone.

A backbone subclass builds its trunk on the model itself, so that state-dict keys read like
the paper and like the released models (``conv1_1`` … ``fc7``, ``score_fr``, ``score_pool4``,
``upscore2``, ``upscore8``), and reports three taps: the outputs at strides 8, 16 and 32.
This class adds the head:

* FCN-32s: 1×1 class scores on the stride-32 tap (``score_fr``), upsampled 32× (``upscore``).
* FCN-16s: those scores upsampled 2× (``upscore2``) and summed with 1×1 scores of the stride-16
  tap (``score_pool4``), then upsampled 16× (``upscore16``).
* FCN-8s: the same once more with the stride-8 tap (``score_pool3``, ``upscore_pool4``), then
  8× (``upscore8``).

Every deconvolution kernel size and crop is derived from the layer geometry (``geometry.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import InputError
from .geometry import Affine, LayerGeom, Upsampling, chain, chain_size, geom_of, plan_upsampling
from .padding import pad_to_minimum
from .upsample import bilinear_deconv, crop_like, fuse, grid_upsample

#: Which taps each variant fuses, coarse to fine, with the reference nets' layer names:
#: (stride, score layer, upsampling layer that brings the coarser scores to this stride).
_SKIPS = {
    "fcn32s": (),
    "fcn16s": ((16, "score_pool4", "upscore2"),),
    "fcn8s": ((16, "score_pool4", "upscore2"), (8, "score_pool3", "upscore_pool4")),
}
_FINAL_UPSCORE = {"fcn32s": "upscore", "fcn16s": "upscore16", "fcn8s": "upscore8"}
_DATA = Affine()  # the input image: stride 1, offset 0
#: Edge layouts replicate each score map by one cell on every side before upsampling it, so that
#: the deconvolution interpolates up to the border instead of fading to zero there: it then equals
#: bilinear interpolation with edge clamping (F.interpolate's behaviour). The reference nets
#: don't (their 100-pixel padding puts real cells beyond the image). As geometry it is a 1×1
#: "layer" with padding 1: one cell more on each side, cells shifted by one.
_SCORE_PAD = LayerGeom(kernel=1, padding=1)


@dataclass(frozen=True)
class HeadPlan:
    """The derived geometry of the head: one upsampling per fusion, then the final one."""

    skips: tuple[tuple[int, str, str, Upsampling], ...]
    final: Upsampling
    pad_scores: bool = False
    input_margin: int = 0
    min_input: int = 1
    #: The final upsampling's crop when its cells sit on the output grid (pixel f·i is cell
    #: i) and its kernel is fixed bilinear: it is then exported as one Resize
    #: (``upsample.grid_upsample``). None: the deconvolution as it is.
    grid_crop: int | None = None


class FCN(nn.Module):
    """A fully convolutional network; subclasses provide the trunk.

    Subclasses implement ``_build_trunk`` (create layers on ``self``, return the channel count
    of each tap), ``_trunk`` (input → ``{8: ..., 16: ..., 32: ...}``) and ``_tap_layers``
    (the spatial layers from the input to each tap, in order, for the geometry).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        channels = self._build_trunk()
        classes = config.num_classes
        self.score_fr = nn.Conv2d(channels[32], classes, 1)
        self.plan = self._plan_head()
        for stride, score_name, up_name, up in self.plan.skips:
            setattr(self, score_name, nn.Conv2d(channels[stride], classes, 1))
            setattr(self, up_name, bilinear_deconv(classes, up, config.learnable_upsampling))
        final = bilinear_deconv(classes, self.plan.final, config.learnable_upsampling)
        setattr(self, _FINAL_UPSCORE[config.name], final)
        self._init_scores()

    # --- the subclass contract -------------------------------------------------------------
    def _build_trunk(self) -> dict[int, int]:
        raise NotImplementedError

    def _trunk(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        raise NotImplementedError

    def _tap_layers(self) -> dict[int, list[nn.Module]]:
        raise NotImplementedError

    # --- forward -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×C_in×H×W image batch → N×num_classes×H×W class scores (logits) at the input's size."""
        return self.head_scores(self.taps(x), x)

    def taps(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """The trunk's outputs at strides 8, 16 and 32 for the image batch ``x``."""
        return self._trunk(self._pad_input(x))

    def head_scores(self, taps: dict[int, torch.Tensor], x: torch.Tensor,
                    layers: nn.Module | None = None) -> torch.Tensor:
        """The head on ``taps``, cropped to ``x``'s size. ``layers`` holds the head's score and
        upsampling layers by name (default: this model's own); another head of the same
        variant and trunk (``MultiHeadFCN``) passes its own, the geometry being the same."""
        layers = self if layers is None else layers
        score = layers.score_fr(taps[32])
        for stride, score_name, up_name, up in self.plan.skips:
            skip = getattr(layers, score_name)(taps[stride])
            score = fuse(getattr(layers, up_name)(self._pad_scores(score)), skip, up.crop)
        upscore = getattr(layers, _FINAL_UPSCORE[self.config.name])
        if self.plan.grid_crop is not None:
            return crop_like(grid_upsample(score, upscore, self.plan.grid_crop), x, 0)
        return crop_like(upscore(self._pad_scores(score)), x, self.plan.final.crop)

    def head_layer_names(self) -> tuple[str, ...]:
        """The names of the head's layers: ``score_fr``, the skips' score and upsampling
        layers, the final upsampling."""
        names = ["score_fr"]
        for _, score_name, up_name, _ in self.plan.skips:
            names += [score_name, up_name]
        return (*names, _FINAL_UPSCORE[self.config.name])

    def _pad_scores(self, score: torch.Tensor) -> torch.Tensor:
        return F.pad(score, (1, 1, 1, 1), mode="replicate") if self.plan.pad_scores else score

    def coarse_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-32 class scores (``score_fr``) before any upsampling or fusion.

        This is the convolutionalised classifier's output map (paper Figure 2) and the input
        to shift-and-stitch (§3.2, ``fcn_edge.models.shift_and_stitch``).
        """
        return self.score_fr(self._trunk(self._pad_input(x))[32])

    def _pad_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels or not x.is_floating_point():
            raise InputError(f"expected an N×{self.config.in_channels}×H×W float tensor (a "
                             f"normalised image batch), got {x.dtype} of shape {tuple(x.shape)}")
        # Bottom/right only: cells keep their positions and the final crop drops the padding.
        return pad_to_minimum(x, self.plan.input_margin, self.plan.min_input)

    # --- geometry ----------------------------------------------------------------------------
    def tap_geometry(self) -> dict[int, list[LayerGeom]]:
        """The spatial layers from the input to each tap (height axis)."""
        return {s: [g for g in map(geom_of, mods) if g is not None]
                for s, mods in self._tap_layers().items()}

    def _plan_head(self) -> HeadPlan:
        geoms = self.tap_geometry()
        where = {s: chain(g) for s, g in geoms.items()}  # score_fr is 1×1: same cells as tap 32
        pad = self.config.layout == "edge"
        padded = (lambda a: a.then(_SCORE_PAD.affine)) if pad else (lambda a: a)
        current, skips = where[32], []
        for stride, score_name, up_name in _SKIPS[self.config.name]:
            up = plan_upsampling(padded(current), where[stride])
            skips.append((stride, score_name, up_name, up))
            # The fused map starts at the skip map's cell max(0, -crop).
            fine = where[stride]
            current = Affine(fine.stride, fine.offset + max(0, -up.crop) * fine.stride)
        final = plan_upsampling(padded(current), _DATA)
        if final.crop < 0:
            raise ValueError("the network's output starts inside the image; it cannot be aligned")
        plan = HeadPlan(tuple(skips), final, pad_scores=pad)
        margin, min_input = _input_padding(plan, geoms)
        grid = pad and not self.config.learnable_upsampling and current.offset == 0
        return replace(plan, input_margin=margin, min_input=min_input,
                       grid_crop=final.crop if grid else None)

    def _init_scores(self) -> None:
        """Class-scoring layers start at zero, as in the paper (§4.2, "zero-initialized")."""
        for name in ("score_fr", "score_pool4", "score_pool3"):
            layer = getattr(self, name, None)
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)


def output_size(plan: HeadPlan, geoms: dict[int, list[LayerGeom]], n: int) -> int:
    """Length of the final upsampled map (before the crop) for an input of length ``n``.

    Returns 0 when some map vanishes or a fusion crop does not fit, i.e. the input is too small.
    """
    extra = 2 if plan.pad_scores else 0  # one replicated cell on each side
    size = chain_size(geoms[32], n)
    for stride, _, _, up in plan.skips:
        skip, upsampled = chain_size(geoms[stride], n), up.out_size(size + extra) if size else 0
        if skip < 1 or size < 1:
            return 0
        if up.crop >= 0:
            if upsampled < up.crop + skip:
                return 0
            size = skip
        else:
            if skip < -up.crop + upsampled:
                return 0
            size = upsampled
    return plan.final.out_size(size + extra) if size > 0 else 0


def _input_padding(plan: HeadPlan, geoms: dict[int, list[LayerGeom]]) -> tuple[int, int]:
    """``(margin, min_input)``: zero rows/columns appended so the output covers every input.

    ``margin`` is the fewest that make every input of ``min_input`` pixels or more covered
    (a stride-4 conv1 without ceil rounding can leave the last pixels without a cell);
    ``min_input`` is the smallest size that then works; smaller inputs are padded up to it.
    Layer sizes repeat with period 32 once the input is large, so checking a few periods
    beyond the largest receptive field settles it for all sizes.
    """
    def covered(n: int, margin: int) -> bool:
        return output_size(plan, geoms, n + margin) >= plan.final.crop + n

    large = range(2 * 32, 10 * 32)
    margin = next((m for m in range(4 * 32) if all(covered(n, m) for n in large)), None)
    if margin is None:
        raise ValueError("no input margin up to 128 pixels makes this network cover its input")
    min_input = large.start
    while min_input > 1 and covered(min_input - 1, margin):
        min_input -= 1
    return margin, min_input
