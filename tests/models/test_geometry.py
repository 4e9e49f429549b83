"""Tests of fcn_edge.models.geometry: layer sizes, cell positions and derived crops.

The FCN paper's released Caffe nets align their score maps with hand-entered crop offsets
(FCN-32s: 19; FCN-16s: 5 and 27; FCN-8s: 5, 9 and 31). fcn-edge derives them from the layer
geometry instead; the key tests below check that the derivation reproduces those numbers for
the reference layout and record what it derives for the other trunks.

Convention (geometry.Affine): cell x of a blob is centred on input pixel ``stride·x + offset``.
"""
from __future__ import annotations

import functools
import itertools
from fractions import Fraction as Fr

import pytest
import torch
from torch import nn

from fcn_edge.models import create_model
from fcn_edge.models.fcn import output_size
from fcn_edge.models.geometry import (Affine, LayerGeom, Upsampling, chain, chain_size, geom_of,
                                      plan_upsampling)

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANTS = ("fcn32s", "fcn16s", "fcn8s")


@functools.lru_cache(maxsize=None)
def meta_model(name, backbone="vgg16", layout="edge"):
    """The model without real weights: only its plan and geometry are read here."""
    if backbone == "resnet18":  # (normal_ init on meta costs a one-off 2 s import; CPU is 0.2 s)
        return create_model(name, num_classes=5, backbone=backbone, layout=layout)
    with torch.device("meta"):
        return create_model(name, num_classes=5, backbone=backbone, layout=layout)


CONV3 = LayerGeom(3, 1, 1)           # every VGG 3×3 convolution (edge layout)
POOL2 = LayerGeom(2, 2, 0, ceil_mode=True)  # every VGG 2×2/2 max pooling
VGG_BLOCKS = [CONV3, CONV3, POOL2] * 5  # (the number of convolutions per block is irrelevant)


def _torch_size(layer: nn.Module, n: int) -> int:
    try:
        return layer(torch.zeros(1, 1, n, 1)).shape[2]
    except RuntimeError:  # PyTorch refuses inputs whose output would be empty
        return 0


# --------------------------------------------------------------------------------------------
# LayerGeom.out_size against PyTorch
# --------------------------------------------------------------------------------------------

def test_out_size_matches_conv2d():
    mismatches = []
    for k, s, p, d in itertools.product(range(1, 6), range(1, 4), range(0, 4), (1, 2)):
        conv = nn.Conv2d(1, 1, (k, 1), stride=(s, 1), padding=(p, 0), dilation=(d, 1), bias=False)
        geom = LayerGeom(k, s, p, d)
        for n in range(1, 41):
            if geom.out_size(n) != _torch_size(conv, n):
                mismatches.append((k, s, p, d, n, geom.out_size(n), _torch_size(conv, n)))
    assert mismatches == []


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_out_size_matches_maxpool2d(ceil_mode):
    mismatches, checked = [], 0
    for k, s, d in itertools.product(range(1, 5), range(1, 4), (1, 2)):
        # PyTorch only accepts padding up to half the (undilated) kernel size.
        for p in range(k // 2 + 1):
            pool = nn.MaxPool2d((k, 1), stride=(s, 1), padding=(p, 0), dilation=(d, 1),
                                ceil_mode=ceil_mode)
            geom = LayerGeom(k, s, p, d, ceil_mode)
            for n in range(1, 41):
                checked += 1
                if geom.out_size(n) != _torch_size(pool, n):
                    mismatches.append((k, s, p, d, n, geom.out_size(n), _torch_size(pool, n)))
    assert mismatches == []
    assert checked > 1000


def test_ceil_mode_drops_window_starting_in_padding():
    # k=2, s=2, p=1, n=2, ceil: windows start at -1 and 1; a third would start at 3 = n + p,
    # entirely in the right padding, so PyTorch keeps 2 (the formula alone would give 3).
    geom = LayerGeom(2, 2, 1, ceil_mode=True)
    assert geom.out_size(2) == 2
    assert _torch_size(nn.MaxPool2d(2, 2, 1, ceil_mode=True), 2) == 2
    # Floor vs ceil on an odd size: 7 → 3 (floor) or 4 (ceil, Caffe's rule).
    assert LayerGeom(2, 2).out_size(7) == 3
    assert LayerGeom(2, 2, ceil_mode=True).out_size(7) == 4


def test_out_size_vanishes_and_chain_size():
    assert LayerGeom(7).out_size(6) == 0        # an unpadded 7×7 needs 7 pixels
    assert LayerGeom(7).out_size(7) == 1
    # Five ceil-mode VGG blocks: ⌈n/32⌉ cells, and a 1-pixel input keeps one cell.
    for n in (1, 31, 32, 33, 224, 500):
        assert chain_size(VGG_BLOCKS, n) == -(-n // 32)
    # Once a map vanishes it stays vanished (0 is not fed to the next layer's formula).
    assert chain_size([LayerGeom(7), LayerGeom(1, padding=5)], 3) == 0


def test_geom_of_reads_torch_modules():
    assert geom_of(nn.Conv2d(3, 8, 7, stride=2, padding=3, dilation=1)) == LayerGeom(7, 2, 3, 1)
    assert geom_of(nn.Conv2d(3, 8, (5, 3), stride=(4, 1), padding=(2, 1), dilation=(2, 1))) == \
        LayerGeom(5, 4, 2, 2)  # the height axis
    assert geom_of(nn.MaxPool2d(3, 2, 1, ceil_mode=True)) == LayerGeom(3, 2, 1, 1, True)
    assert geom_of(nn.ReLU()) is None
    assert geom_of(nn.BatchNorm2d(4)) is None


# --------------------------------------------------------------------------------------------
# Affine maps: hand-worked examples
# --------------------------------------------------------------------------------------------

def test_affine_of_single_layers():
    # 3×3, pad 1: cell x is centred on x·1 − 1 + (3−1)/2 = x — the identity map.
    assert CONV3.affine == Affine(Fr(1), Fr(0))
    # 2×2/2 pool: cell x covers pixels 2x, 2x+1, centre 2x + 0.5.
    assert POOL2.affine == Affine(Fr(2), Fr(1, 2))
    # 7×7 unpadded (reference fc6): centre x + 3.
    assert LayerGeom(7).affine == Affine(Fr(1), Fr(3))
    # 3×3 pad 100 (reference conv1_1): x + 1 − 100 = x − 99.
    assert LayerGeom(3, 1, 100).affine == Affine(Fr(1), Fr(-99))
    # AlexNet conv1 11×11/4 pad 2: 4x − 2 + 5 = 4x + 3.
    assert LayerGeom(11, 4, 2).affine == Affine(Fr(4), Fr(3))
    # A 6×6 kernel padded 3 has no centre pixel: x − 3 + 2.5 = x − 0.5.
    assert LayerGeom(6, 1, 3).affine == Affine(Fr(1), Fr(-1, 2))
    # Dilation 2, 3×3, pad 2: x − 2 + 2·(3−1)/2 = x.
    assert LayerGeom(3, 1, 2, 2).affine == Affine(Fr(1), Fr(0))


def test_affine_then_composes_in_order():
    # pool (x → 2x + ½) then an unpadded 7×7 reading the pooled map (y → y + 3):
    # x → 2(x + 3) + ½ = 2x + 6.5.
    assert Affine(Fr(2), Fr(1, 2)).then(Affine(Fr(1), Fr(3))) == Affine(Fr(2), Fr(13, 2))
    # The other order: 7×7 then pool: x → (2x + ½) + 3 = 2x + 3.5.
    assert Affine(Fr(1), Fr(3)).then(Affine(Fr(2), Fr(1, 2))) == Affine(Fr(2), Fr(7, 2))
    assert chain([]) == Affine(Fr(1), Fr(0))


def test_chain_vgg_blocks():
    # One block: x → 2x + ½. Two: 2(2x + ½) + ½ = 4x + 1.5. Three: 8x + 3.5. Four: 16x + 7.5.
    # Five: 32x + 15.5 (pool5, stride 32; cell 0 centred between pixels 15 and 16).
    expected = [(2, Fr(1, 2)), (4, Fr(3, 2)), (8, Fr(7, 2)), (16, Fr(15, 2)), (32, Fr(31, 2))]
    for blocks, (stride, offset) in enumerate(expected, 1):
        assert chain([CONV3, CONV3, POOL2] * blocks) == Affine(Fr(stride), offset)
    # Edge fc6 (7×7 pad 3) and fc7 (1×1) are identities: still 32x + 15.5.
    assert chain(VGG_BLOCKS + [LayerGeom(7, 1, 3), LayerGeom(1)]) == Affine(Fr(32), Fr(31, 2))
    # Reference layout: conv1_1 pads 100 (offset −99), so pool1 = 2x + ½ − 99 = 2x − 98.5 and
    # pool5 = 2(16x + 7.5) − 98.5 = 32x − 83.5; unpadded fc6 adds 3 cells: 32(x+3) − 83.5 =
    # 32x + 12.5.
    reference = [LayerGeom(3, 1, 100)] + VGG_BLOCKS[1:] + [LayerGeom(7), LayerGeom(1)]
    assert chain(reference) == Affine(Fr(32), Fr(25, 2))


# --------------------------------------------------------------------------------------------
# plan_upsampling: hand-worked cases
# --------------------------------------------------------------------------------------------

DATA = Affine()


def test_plan_reference_fcn32s_onto_data():
    # Coarse cell 0 at 12.5 px: half-way between pixels → even kernel 2·32 = 64, whose centre
    # is (64−1)/2 = 31.5 upsampled cells in; crop = 31.5 − 12.5 = 19 (the released "crop 19").
    assert plan_upsampling(Affine(Fr(32), Fr(25, 2)), DATA) == Upsampling(32, 64, 19)


def test_plan_integer_shift_gives_odd_kernel():
    # Coarse cell 0 on pixel 15 → odd kernel 2·32 − 1 = 63, centre 31, crop 31 − 15 = 16.
    assert plan_upsampling(Affine(Fr(32), Fr(15)), DATA) == Upsampling(32, 63, 16)
    # Factor 2, shift 0 (ResNet taps): kernel 3, centre 1, crop 1.
    assert plan_upsampling(Affine(Fr(32), Fr(0)), Affine(Fr(16), Fr(0))) == Upsampling(2, 3, 1)
    # Factor 1 and no shift: a 1×1 identity, no crop.
    assert plan_upsampling(Affine(Fr(8), Fr(3)), Affine(Fr(8), Fr(3))) == Upsampling(1, 1, 0)


def test_plan_half_shift_gives_even_kernel():
    # Edge VGG pool5 (32, 15.5) onto pool4 (16, 7.5): shift (15.5 − 7.5)/16 = ½ fine cell →
    # kernel 4, centre 1.5, crop 1.5 − 0.5 = 1.
    assert plan_upsampling(Affine(Fr(32), Fr(31, 2)), Affine(Fr(16), Fr(15, 2))) == \
        Upsampling(2, 4, 1)
    # Reference fc7 (32, 12.5) onto reference pool4 (16, −91.5): shift 104/16 = 6.5 fine
    # cells → kernel 4, crop 1.5 − 6.5 = −5: the skip map is cropped by 5 (released "crop 5").
    assert plan_upsampling(Affine(Fr(32), Fr(25, 2)), Affine(Fr(16), Fr(-183, 2))) == \
        Upsampling(2, 4, -5)


@pytest.mark.parametrize("coarse,fine", [
    (Affine(Fr(32), Fr(8)), Affine(Fr(16), Fr(4))),          # shift 1/4 fine cell
    (Affine(Fr(16), Fr(15, 2)), Affine(Fr(8), Fr(13, 4))),   # shift 17/32
    (Affine(Fr(32), Fr(1, 3)), DATA),                        # shift 1/3 pixel
])
def test_plan_other_fractional_shift_is_rejected(coarse, fine):
    with pytest.raises(ValueError, match="cannot be aligned"):
        plan_upsampling(coarse, fine)


@pytest.mark.parametrize("coarse,fine", [
    (Affine(Fr(24), Fr(0)), Affine(Fr(16), Fr(0))),  # ratio 3/2
    (Affine(Fr(8), Fr(0)), Affine(Fr(16), Fr(0))),   # ratio 1/2: downsampling
    (Affine(Fr(3, 2), Fr(0)), DATA),                 # fractional stride onto the data
])
def test_plan_non_integer_ratio_is_rejected(coarse, fine):
    with pytest.raises(ValueError, match="cannot upsample"):
        plan_upsampling(coarse, fine)


@pytest.mark.parametrize("factor", [1, 2, 4, 8, 16, 32])
@pytest.mark.parametrize("shift2", range(-13, 14))  # twice the shift, in fine cells
def test_plan_puts_coarse_cells_on_their_positions(factor, shift2):
    # A stride-f deconvolution puts coarse cell x at upsampled index f·x + (k−1)/2; after the
    # crop that is fine cell f·x + (k−1)/2 − crop, which must sit where the coarse cell sits.
    fine = Affine(Fr(4), Fr(3, 2))
    coarse = Affine(fine.stride * factor, fine.offset + fine.stride * Fr(shift2, 2))
    up = plan_upsampling(coarse, fine)
    assert up.factor == factor
    assert up.kernel == (2 * factor if shift2 % 2 else max(2 * factor - 1, 1))
    for x in (0, 1, 5):
        # (A half-integer index for even kernels: the cell falls between two fine cells.)
        index = factor * x + Fr(up.kernel - 1, 2) - up.crop
        assert index.denominator == (2 if up.kernel % 2 == 0 else 1)
        assert fine.stride * index + fine.offset == coarse.stride * x + coarse.offset


def test_upsampling_out_size():
    # (n − 1)·f + k: 7 cells, f = 32, k = 64 → 6·32 + 64 = 256.
    assert Upsampling(32, 64, 19).out_size(7) == 256
    assert Upsampling(2, 3, 1).out_size(1) == 3


# --------------------------------------------------------------------------------------------
# THE KEY TEST: the reference layout reproduces the released nets' crops
# --------------------------------------------------------------------------------------------

def _plan(name, backbone="vgg16", layout="edge"):
    return meta_model(name, backbone, layout).plan


def _summary(plan):
    """((skip layer, factor, kernel, crop), …, ('final', factor, kernel, crop))."""
    skips = tuple((score, up.factor, up.kernel, up.crop) for _, score, _, up in plan.skips)
    return skips + (("final", plan.final.factor, plan.final.kernel, plan.final.crop),)


def test_reference_crops_match_released_caffe_nets():
    # voc-fcn32s/net.py: upscore = Deconvolution(kernel 64, stride 32); crop(upscore, data)
    # with offset 19.
    assert _summary(_plan("fcn32s", layout="reference")) == (("final", 32, 64, 19),)
    # voc-fcn16s: upscore2 (k4, s2); score_pool4c = crop(score_pool4, upscore2) offset 5 (our
    # crop −5: the skip map is the one cropped); upscore16 (k32, s16); final crop 27.
    assert _summary(_plan("fcn16s", layout="reference")) == (
        ("score_pool4", 2, 4, -5), ("final", 16, 32, 27))
    # voc-fcn8s: score_pool4c offset 5, score_pool3c offset 9, upscore8 (k16, s8) crop 31.
    assert _summary(_plan("fcn8s", layout="reference")) == (
        ("score_pool4", 2, 4, -5), ("score_pool3", 2, 4, -9), ("final", 8, 16, 31))


def test_reference_crops_derivation_by_hand():
    # The same numbers, from the tap positions (see test_chain_vgg_blocks):
    #   pool3 = 8x − 95.5, pool4 = 16x − 91.5, fc7 = 32x + 12.5.
    # 16s: fc7 onto pool4: shift (12.5 + 91.5)/16 = 6.5 → k 4, crop 1.5 − 6.5 = −5; the fused
    #   map starts at pool4 cell 5 = −91.5 + 80 = −11.5 → onto data: k 32, crop 15.5 + 11.5 = 27.
    # 8s: fused (16, −11.5) onto pool3: shift (−11.5 + 95.5)/8 = 10.5 → k 4, crop −9; fused
    #   starts at pool3 cell 9 = −95.5 + 72 = −23.5 → onto data: k 16, crop 7.5 + 23.5 = 31.
    model = meta_model("fcn8s", "vgg16", "reference")
    where = {s: chain(g) for s, g in model.tap_geometry().items()}
    assert where == {8: Affine(Fr(8), Fr(-191, 2)), 16: Affine(Fr(16), Fr(-183, 2)),
                     32: Affine(Fr(32), Fr(25, 2))}
    up4 = plan_upsampling(where[32], where[16])
    assert up4 == Upsampling(2, 4, -5)
    fused16 = Affine(Fr(16), where[16].offset + 5 * 16)
    assert fused16.offset == Fr(-23, 2)
    assert plan_upsampling(fused16, where[8]) == Upsampling(2, 4, -9)
    fused8 = Affine(Fr(8), where[8].offset + 9 * 8)
    assert plan_upsampling(fused8, DATA) == Upsampling(8, 16, 31)


# --------------------------------------------------------------------------------------------
# The other trunks' derived plans
# --------------------------------------------------------------------------------------------

# Edge layouts replicate every score map by one cell on each side before upsampling it
# (HeadPlan.pad_scores), so that the output is clamped at the borders instead of fading to 0.
# As geometry that is a 1×1 layer with padding 1: cell x of the padded map is cell x − 1 of the
# map, i.e. the offset moves back one stride, and each crop grows by the upsampling factor.
SCORE_PAD = LayerGeom(1, 1, 1)


def test_score_padding_geometry():
    assert SCORE_PAD.affine == Affine(Fr(1), Fr(-1))
    padded = Affine(Fr(32), Fr(31, 2)).then(SCORE_PAD.affine)
    assert padded == Affine(Fr(32), Fr(-33, 2))  # 15.5 − 32
    # Unpadded: k 64, crop 31.5 − 15.5 = 16; padded: crop 31.5 + 16.5 = 48 = 16 + 32.
    assert plan_upsampling(Affine(Fr(32), Fr(31, 2)), DATA) == Upsampling(32, 64, 16)
    assert plan_upsampling(padded, DATA) == Upsampling(32, 64, 48)
    assert meta_model("fcn8s").plan.pad_scores is True
    assert meta_model("fcn8s", "alexnet").plan.pad_scores is True
    assert meta_model("fcn8s", layout="reference").plan.pad_scores is False


def test_edge_vgg16_plans():
    # Taps: pool3 8x + 3.5, pool4 16x + 7.5, fc7 32x + 15.5 (fc6 pads 3: no shift).
    # 32s: padded fc7 at 32x − 16.5 (half shift) → k 64, crop 31.5 + 16.5 = 48.
    # 16s: padded fc7 onto pool4: shift (−16.5 − 7.5)/16 = −1.5 → k 4, crop 1.5 + 1.5 = 3; the
    #   fused map is pool4's grid (16x + 7.5), padded 16x − 8.5 → k 32, crop 15.5 + 8.5 = 24.
    # 8s: the same once more: k 4 crop 3; fused pool3 grid padded 8x − 4.5 → k 16, crop 12.
    assert _summary(_plan("fcn32s")) == (("final", 32, 64, 48),)
    assert _summary(_plan("fcn16s")) == (("score_pool4", 2, 4, 3), ("final", 16, 32, 24))
    assert _summary(_plan("fcn8s")) == (
        ("score_pool4", 2, 4, 3), ("score_pool3", 2, 4, 3), ("final", 8, 16, 12))


def test_alexnet_plans():
    # conv1 11×11/4 pad 2 → 4x + 3; pool1 3×3/2 → 2x + 1: 8x + 7; conv2 pads 2 (identity);
    # pool2 → 16x + 15; pool5 → 32x + 31; fc6 6×6 pad 3 (x − ½) → 32x + 15.
    where = {s: chain(g) for s, g in meta_model("fcn8s", "alexnet").tap_geometry().items()}
    assert where == {8: Affine(Fr(8), Fr(7)), 16: Affine(Fr(16), Fr(15)),
                     32: Affine(Fr(32), Fr(15))}
    # 32s: padded fc7 at 32x − 17 (integer) → k 63, crop 31 + 17 = 48.
    # 16s: padded fc7 onto pool2: shift (−17 − 15)/16 = −2 → k 3, crop 1 + 2 = 3; fused on
    #   pool2's grid, padded 16x − 1 → k 31, crop 15 + 1 = 16.
    # 8s: padded (16x − 1) onto pool1 (8x + 7): shift −8/8 = −1 → k 3, crop 1 + 1 = 2; fused on
    #   pool1's grid, padded 8x − 1 → k 15, crop 7 + 1 = 8.
    assert _summary(_plan("fcn32s", "alexnet")) == (("final", 32, 63, 48),)
    assert _summary(_plan("fcn16s", "alexnet")) == (("score_pool4", 2, 3, 3), ("final", 16, 31, 16))
    assert _summary(_plan("fcn8s", "alexnet")) == (
        ("score_pool4", 2, 3, 3), ("score_pool3", 2, 3, 2), ("final", 8, 15, 8))


def test_resnet18_plans():
    # Every layer pads half its kernel: conv1 7×7/2 pad 3 → 2x, maxpool 3×3/2 pad 1 → 2x,
    # the stride-2 3×3 convs → 2x: all taps at offset 0 (cell x on pixel s·x).
    where = {s: chain(g) for s, g in meta_model("fcn8s", "resnet18").tap_geometry().items()}
    assert where == {8: Affine(Fr(8), Fr(0)), 16: Affine(Fr(16), Fr(0)), 32: Affine(Fr(32), Fr(0))}
    # Integer shifts everywhere → odd kernels 2f − 1; the padded map starts one stride early:
    # crop (k − 1)/2 + f: 31 + 32 = 63, 1 + 2 = 3, 15 + 16 = 31, 7 + 8 = 15.
    assert _summary(_plan("fcn32s", "resnet18")) == (("final", 32, 63, 63),)
    assert _summary(_plan("fcn16s", "resnet18")) == (
        ("score_pool4", 2, 3, 3), ("final", 16, 31, 31))
    assert _summary(_plan("fcn8s", "resnet18")) == (
        ("score_pool4", 2, 3, 3), ("score_pool3", 2, 3, 3), ("final", 8, 15, 15))


@pytest.mark.parametrize("backbone,layout,expected", [
    # VGG16 (both layouts) and ResNet18 pad every layer enough that any size ≥ 1 works as is.
    ("vgg16", "edge", {n: (0, 1) for n in VARIANTS}),
    ("vgg16", "reference", {n: (0, 1) for n in VARIANTS}),
    ("resnet18", "edge", {n: (0, 1) for n in VARIANTS}),
    # AlexNet: unpadded 3×3/2 pools need conv1 to give 8 cells for pool5 to keep one:
    # 4·(8 − 1) + 11 − 2·2 = 35 pixels; smaller inputs are padded up to 35. The replicated
    # score cell beyond the last one reaches past the pixels conv1's floor rounding drops (up
    # to 3), so no margin is needed.
    ("alexnet", "edge", {n: (0, 35) for n in VARIANTS}),
])
def test_input_padding(backbone, layout, expected):
    for name, (margin, min_input) in expected.items():
        model = meta_model(name, backbone, layout)
        plan, geoms = model.plan, model.tap_geometry()
        assert (plan.input_margin, plan.min_input) == (margin, min_input), name

        def covered(n, m):
            return output_size(plan, geoms, n + m) >= plan.final.crop + n

        # Every size from min_input on is covered with the margin; the one below is not, and
        # one margin less leaves some size uncovered (both are the smallest that work).
        assert all(covered(n, margin) for n in range(min_input, 400)), name
        if min_input > 1:
            assert not covered(min_input - 1, margin), name
        if margin > 0:
            assert not all(covered(n, margin - 1) for n in range(min_input, 400)), name
