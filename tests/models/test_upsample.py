"""Tests of fcn_edge.models.upsample: bilinear kernels, the depthwise deconvolution (paper §3.3)
and the crop/fuse step of the skip architecture (§4.2)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fcn_edge.models.geometry import Upsampling
from fcn_edge.models import create_model
from fcn_edge.models.registry import get_backbone
from fcn_edge.models.upsample import (bilinear_deconv, bilinear_kernel, crop_like, fuse,
                                      grid_upsample)

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------
# bilinear_kernel
# --------------------------------------------------------------------------------------------

def test_kernel_4_exact():
    # Factor 2, centre between taps 1 and 2 (1.5): 1 − |i − 1.5|/2 = .25, .75, .75, .25.
    k = bilinear_kernel(4)
    assert k.dtype == np.float32 and k.shape == (4, 4)
    taps = [.25, .75, .75, .25]
    assert np.array_equal(k, np.outer(taps, taps).astype(np.float32))


def test_kernel_3_exact():
    # Factor 2, centre on tap 1: 1 − |i − 1|/2 = .5, 1, .5.
    assert np.array_equal(bilinear_kernel(3), np.outer([.5, 1, .5], [.5, 1, .5]).astype(np.float32))


def test_kernel_1_and_2():
    assert np.array_equal(bilinear_kernel(1), np.ones((1, 1), np.float32))
    # Factor 1, half a cell shift: the mean of two neighbours.
    assert np.array_equal(bilinear_kernel(2), np.full((2, 2), .25, np.float32))


@pytest.mark.parametrize("size,factor", [(16, 8), (63, 32), (64, 32), (31, 16), (15, 8)])
def test_kernel_shape_properties(size, factor):
    k = bilinear_kernel(size).astype(np.float64)
    assert k.shape == (size, size)
    assert np.array_equal(k, k.T)
    assert np.array_equal(k, k[::-1, ::-1])
    # Separable, a triangle of half-width f centred on the middle ((size − 1)/2 for both
    # parities: f − 1 for 2f − 1 taps, f − ½ for 2f taps).
    taps = 1 - np.abs(np.arange(size) - (size - 1) / 2) / factor
    assert np.allclose(k, np.outer(taps, taps), atol=1e-7)
    # Maximum: on the centre tap for odd sizes (value 1), on the central 2×2 for even sizes
    # (1 − ½/f)².
    peak = np.argwhere(k == k.max())
    if size % 2:
        assert peak.tolist() == [[size // 2, size // 2]] and k.max() == 1.0
    else:
        c = size // 2
        assert sorted(map(tuple, peak.tolist())) == [(c - 1, c - 1), (c - 1, c), (c, c - 1), (c, c)]
        assert k.max() == pytest.approx((1 - 0.5 / factor) ** 2)
    # Each 1-D tap set sums to f (each row to f·tap), the kernel to f².
    assert k.sum() == pytest.approx(factor ** 2)
    assert np.allclose(k.sum(axis=1), factor * taps)
    # Partition of unity: the taps f apart (one output phase) sum to 1, which is why
    # upsampling a constant map gives the constant.
    for phase in range(factor):
        assert taps[phase::factor].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("size", [0, -1, -64])
def test_kernel_invalid_size(size):
    with pytest.raises(ValueError):
        bilinear_kernel(size)


# --------------------------------------------------------------------------------------------
# bilinear_deconv
# --------------------------------------------------------------------------------------------

def _apply(deconv, x, crop, like_h, like_w):
    with torch.no_grad():
        y = deconv(x)
    return y[:, :, crop:crop + like_h, crop:crop + like_w]


def test_deconv_is_depthwise_and_fixed():
    plan = Upsampling(factor=8, kernel=16, crop=4)
    deconv = bilinear_deconv(21, plan)
    assert tuple(deconv.weight.shape) == (21, 1, 16, 16)
    assert deconv.groups == 21 and deconv.stride == (8, 8) and deconv.bias is None
    assert deconv.weight.requires_grad is False
    expected = torch.from_numpy(bilinear_kernel(16))
    for c in (0, 10, 20):
        assert torch.equal(deconv.weight[c, 0], expected)
    learnable = bilinear_deconv(21, plan, learnable=True)
    assert learnable.weight.requires_grad is True
    assert torch.equal(learnable.weight, deconv.weight)


def test_deconv_constant_map_gives_constant_interior():
    plan = Upsampling(factor=32, kernel=64, crop=16)
    deconv = bilinear_deconv(2, plan)
    x = torch.full((1, 2, 5, 6), 2.5)
    y = deconv(x).detach()
    assert y.shape == (1, 2, plan.out_size(5), plan.out_size(6))  # 4·32 + 64, 5·32 + 64
    # Coarse cell i is centred on upsampled index 32i + 31.5: between the first and last cell
    # centres (indices 32 … 159 / 191) every pixel gets two taps summing to 1.
    assert torch.allclose(y[:, :, 32:160, 32:192], torch.tensor(2.5), atol=1e-6)
    # Outside, only one coarse cell contributes and the value falls off towards 0.
    assert y[0, 0, 0, 100] < 2.5 / 2 and y[0, 0, 0, 100] > 0


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_even_kernel_matches_interpolate_half_pixel(factor):
    # F.interpolate(align_corners=False) puts input cell x at output coordinate f·x + (f−1)/2;
    # the 2f kernel puts it at upsampled index f·x + f − ½, so the crop is f/2.
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 7)
    plan = Upsampling(factor=factor, kernel=2 * factor, crop=factor // 2)
    ours = _apply(bilinear_deconv(3, plan), x, plan.crop, 5 * factor, 7 * factor)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert ours.shape == ref.shape
    b = factor  # interpolate clamps at the borders (replicates); the deconvolution zero-pads
    assert torch.allclose(ours[..., b:-b, b:-b], ref[..., b:-b, b:-b], atol=1e-5)
    assert not torch.allclose(ours[..., :1, :], ref[..., :1, :], atol=1e-3)


@pytest.mark.parametrize("factor", [2, 3, 8])
def test_odd_kernel_matches_interpolate_align_corners(factor):
    # The 2f − 1 kernel with crop f − 1 puts cell x on output pixel f·x: align_corners=True
    # onto (n − 1)·f + 1 pixels, equal everywhere (no extrapolation needed).
    torch.manual_seed(1)
    x = torch.randn(1, 2, 4, 6)
    plan = Upsampling(factor=factor, kernel=2 * factor - 1, crop=factor - 1)
    h, w = 3 * factor + 1, 5 * factor + 1
    ours = _apply(bilinear_deconv(2, plan), x, plan.crop, h, w)
    ref = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=True)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_deconv_channels_are_independent():
    plan = Upsampling(factor=2, kernel=4, crop=1)
    deconv = bilinear_deconv(3, plan)
    x = torch.zeros(1, 3, 4, 4)
    x[0, 1] = torch.arange(16.0).reshape(4, 4)
    with torch.no_grad():
        y = deconv(x)
        single = bilinear_deconv(1, plan)(x[:, 1:2])
    assert torch.count_nonzero(y[0, 0]) == 0 and torch.count_nonzero(y[0, 2]) == 0
    assert torch.equal(y[:, 1:2], single)
    assert torch.count_nonzero(y[0, 1]) > 0


def test_depthwise_equals_released_diagonal_kernel():
    # The released nets store C×C×k×k with the bilinear kernel on the diagonal: same output.
    torch.manual_seed(2)
    plan = Upsampling(factor=2, kernel=4, crop=1)
    deconv = bilinear_deconv(4, plan)
    full = torch.zeros(4, 4, 4, 4)
    for c in range(4):
        full[c, c] = torch.from_numpy(bilinear_kernel(4))
    x = torch.randn(2, 4, 5, 3)
    with torch.no_grad():
        assert torch.allclose(deconv(x), F.conv_transpose2d(x, full, stride=2), atol=1e-6)


# --------------------------------------------------------------------------------------------
# crop_like / fuse
# --------------------------------------------------------------------------------------------

def _grid(h, w, start=0.0):
    return (torch.arange(h * w, dtype=torch.float32) + start).reshape(1, 1, h, w)


def test_crop_like():
    x = _grid(5, 6)          # rows: [0..5], [6..11], [12..17], [18..23], [24..29]
    ref = torch.zeros(3, 7, 2, 3)  # only H×W = 2×3 is read
    out = crop_like(x, ref, 1)
    assert torch.equal(out, torch.tensor([[[[7., 8., 9.], [13., 14., 15.]]]]))
    assert torch.equal(crop_like(x, ref, 0), torch.tensor([[[[0., 1., 2.], [6., 7., 8.]]]]))


def test_fuse_positive_crop_crops_the_upsampled_map():
    up = _grid(4, 5)     # [[0..4], [5..9], [10..14], [15..19]]
    skip = torch.full((1, 1, 2, 3), 100.0)
    out = fuse(up, skip, 1)  # up[1:3, 1:4] + skip, at the skip map's size
    assert torch.equal(out, torch.tensor([[[[106., 107., 108.], [111., 112., 113.]]]]))


def test_fuse_negative_crop_crops_the_skip_map():
    up = torch.tensor([[[[1., 2.], [3., 4.]]]])
    skip = _grid(5, 5, start=10.0)  # row r, column c holds 10 + 5r + c
    out = fuse(up, skip, -2)  # up + skip[2:4, 2:4], at the upsampled map's size
    assert torch.equal(out, torch.tensor([[[[1. + 22, 2. + 23], [3. + 27, 4. + 28]]]]))


def test_fuse_zero_crop_and_channels():
    a, b = _grid(3, 3).repeat(2, 4, 1, 1), torch.ones(2, 4, 3, 3)
    out = fuse(a, b, 0)
    assert out.shape == (2, 4, 3, 3)
    assert torch.equal(out, a + 1)


@pytest.mark.parametrize("size", [2.5, True, "4"])
def test_bilinear_kernel_refuses_non_integer_sizes(size):
    with pytest.raises(ValueError, match="integer"):
        bilinear_kernel(size)


# --- the final upsampling on the output grid, exported as one Resize ---------------------------

@pytest.mark.parametrize("backbone, name, grid", [
    ("resnet18", "fcn8s", True), ("mobilenet_v3_large", "fcn32s", True),
    ("mobilenet_v3_small", "fcn16s", True),
    ("googlenet", "fcn8s", False),      # cells at 8·i + 6: not on the output grid
    ("vgg16", "fcn8s", False)])         # cells between pixels (even kernels)
def test_the_grid_path_is_the_deconvolution(backbone, name, grid):
    options = {"fc_channels": 16} if get_backbone(backbone).fc_layers else {}
    model = create_model(name, num_classes=3, backbone=backbone, **options).eval()
    assert (model.plan.grid_crop is not None) == grid
    learnable = create_model(name, num_classes=3, backbone=backbone,
                             learnable_upsampling=True, **options)
    assert learnable.plan.grid_crop is None   # a trained kernel is no longer bilinear
    if not grid:
        return
    upscore = getattr(model, model.head_layer_names()[-1])
    for h, w in [(1, 1), (3, 5), (17, 11)]:
        scores, image = torch.randn(2, 3, h, w), torch.zeros(2, 3, h * 8 - 3, w * 8 - 5)
        expected = crop_like(upscore(F.pad(scores, (1, 1, 1, 1), mode="replicate")), image,
                             model.plan.final.crop)
        got = crop_like(grid_upsample(scores, upscore, model.plan.grid_crop), image, 0)
        assert torch.equal(got, expected)


def test_the_grid_path_exports_as_one_resize():
    """``Resize`` (linear, asymmetric: pixel q ← cell q / f, clamped) replaces the final
    ConvTranspose, and ONNX Runtime's answer equals the deconvolution's."""
    import onnx

    from fcn_edge.export.graph import DeployGraph
    from fcn_edge.export.onnx_export import trace_to_onnx
    from support import ort_infer

    torch.manual_seed(0)
    model = create_model("fcn32s", num_classes=3, backbone="resnet18").eval()
    with torch.no_grad():
        model.score_fr.weight.normal_(0, 0.05)
    graph = trace_to_onnx(DeployGraph(model), example_size=(64, 64))
    resize = [n for n in graph.graph.node if n.op_type == "Resize"]
    assert len(resize) == 1 and not any(n.op_type == "ConvTranspose" for n in graph.graph.node)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in resize[0].attribute}
    assert attrs["mode"] == b"linear" and attrs["coordinate_transformation_mode"] == b"asymmetric"
    infer = ort_infer(graph)
    for h, w in [(1, 1), (33, 65), (97, 131)]:
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            expected = model(x).numpy()
        assert np.abs(infer(x.numpy()) - expected).max() <= 1e-5 * np.abs(expected).max()


def test_a_final_kernel_that_is_no_longer_bilinear_exports_as_it_is():
    """Edited (or loaded) upsampling weights keep the ConvTranspose: a Resize would compute
    bilinear interpolation, not what the model computes."""
    from fcn_edge.export.graph import DeployGraph
    from fcn_edge.export.onnx_export import trace_to_onnx
    from support import ort_infer

    torch.manual_seed(0)
    model = create_model("fcn32s", num_classes=3, backbone="resnet18").eval()
    with torch.no_grad():
        model.score_fr.weight.normal_(0, 0.05)
        model.upscore.weight.mul_(0.5)
    graph = trace_to_onnx(DeployGraph(model), example_size=(64, 64))
    ops = [n.op_type for n in graph.graph.node]
    assert "ConvTranspose" in ops and "Resize" not in ops
    x = torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(ort_infer(graph)(x.numpy()) - expected).max() <= 1e-5 * np.abs(expected).max()
