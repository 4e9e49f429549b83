"""Tests of fcn_edge.models.shift_stitch (paper §3.2).

Shift-and-stitch is claimed to equal "filter rarefaction": the net with its strided pooling made
stride 1 and every later filter dilated by the undone stride. We build both and compare.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcn_edge.models import create_model, shift_and_stitch

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def convs():
    torch.manual_seed(0)
    return (nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 5, 3, padding=1),
            nn.Conv2d(5, 2, 3, padding=1))


def _coarse2(convs):
    c1, c2, _ = convs
    return nn.Sequential(c1, nn.ReLU(), nn.MaxPool2d(2, 2), c2)


def _dense2(convs, x):
    # Rarefaction for f = 2: the pool keeps its 2×2 window at stride 1, and conv2 (which read
    # neighbouring pooled cells 1 apart = 2 pixels apart) reads pixels 2 apart: dilation 2,
    # padding 2. Output H − 1 rows (the stride-1 pool has no window at the last row).
    c1, c2, _ = convs
    y = F.max_pool2d(torch.relu(c1(x)), 2, stride=1)
    return F.conv2d(y, c2.weight, c2.bias, padding=2, dilation=2)


def _coarse4(convs):
    c1, c2, c3 = convs
    return nn.Sequential(c1, nn.ReLU(), nn.MaxPool2d(2, 2), c2, nn.ReLU(), nn.MaxPool2d(2, 2), c3)


def _dense4(convs, x):
    # f = 4: the first pool becomes stride 1 and everything after it is rarefied by 2; the
    # second pool then also becomes stride 1 (its window dilated by 2) and conv3 is rarefied by
    # 2·2 = 4. Output H − 3 rows.
    c1, c2, c3 = convs
    y = F.max_pool2d(torch.relu(c1(x)), 2, stride=1)
    y = torch.relu(F.conv2d(y, c2.weight, c2.bias, padding=2, dilation=2))
    y = F.max_pool2d(y, 2, stride=1, dilation=2)
    return F.conv2d(y, c3.weight, c3.bias, padding=4, dilation=4)


# Why the borders differ: the pass shifted by dy > 0 starts at input row dy, so its conv1 zero
# padding stands where the dense net reads the real rows 0 … dy−1; and at the bottom the pass
# reads the dy zero rows shifted in (conv1 over them is bias, not padding) where the dense net
# has no window at all. Both effects spread by the receptive field of the later, dilated
# layers: rows 1 and 3 and the second-to-last differ for f = 2, rows up to 7 and the last six
# for f = 4. Past a border of 2f pixels the two are identical.
@pytest.mark.parametrize("factor,border,size", [(2, 4, (24, 20)), (4, 8, (48, 40))])
def test_equals_filter_rarefaction_in_interior(convs, factor, border, size):
    coarse = _coarse2(convs) if factor == 2 else _coarse4(convs)
    dense = _dense2 if factor == 2 else _dense4
    torch.manual_seed(factor)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        stitched = shift_and_stitch(coarse, x, factor)
        reference = dense(convs, x)
    h, w = reference.shape[-2:]
    assert (h, w) == (size[0] - factor + 1, size[1] - factor + 1)
    assert stitched.shape == (2, reference.shape[1], *size)
    inner = (..., slice(border, h - border), slice(border, w - border))
    assert torch.allclose(stitched[..., :h, :w][inner], reference[inner], atol=1e-5)
    # The border really is different (so the interior check is not vacuous) …
    assert not torch.allclose(stitched[..., :h, :w], reference, atol=1e-3)
    # … and the unshifted pass is the (f·i, f·j) sub-grid.
    with torch.no_grad():
        assert torch.allclose(stitched[..., ::factor, ::factor], coarse(x), atol=1e-6)


def test_stitch_order_puts_each_pass_on_its_phase():
    # A "net" that returns input pixel (f·i, f·j): the stitched output must be the input itself.
    x = torch.arange(2 * 1 * 12 * 8, dtype=torch.float32).reshape(2, 1, 12, 8)
    out = shift_and_stitch(lambda t: t[..., ::4, ::4], x, 4)
    assert torch.equal(out, x)
    # Non-square factor-3 grid too.
    y = torch.randn(1, 2, 9, 6)
    assert torch.equal(shift_and_stitch(lambda t: t[..., ::3, ::3], y, 3), y)


def test_factor_one_is_the_net(convs):
    torch.manual_seed(3)
    x = torch.randn(1, 3, 10, 14)
    net = _coarse2(convs)
    with torch.no_grad():
        assert torch.equal(shift_and_stitch(net, x, 1), net(x))


def test_output_shape(convs):
    x = torch.randn(3, 3, 16, 22)
    with torch.no_grad():
        out = shift_and_stitch(_coarse2(convs), x, 2)
    assert out.shape == (3, 5, 16, 22)  # (8·2) × (11·2)


@pytest.mark.parametrize("factor", [0, -1, -32])
def test_invalid_factor(convs, factor):
    with pytest.raises(ValueError, match="factor"):
        shift_and_stitch(_coarse2(convs), torch.zeros(1, 3, 8, 8), factor)


def test_changing_output_size_is_rejected():
    sizes = iter([2, 2, 2, 3])
    with pytest.raises(ValueError, match="output size changed"):
        shift_and_stitch(lambda t: torch.zeros(1, 1, next(sizes), 2), torch.zeros(1, 1, 4, 4), 2)


def test_on_fcn_coarse_scores():
    torch.manual_seed(5)
    model = create_model("fcn32s", num_classes=4, backbone="resnet18").eval()
    with torch.no_grad():
        nn.init.normal_(model.score_fr.weight, std=0.05)
        nn.init.normal_(model.score_fr.bias, std=0.05)
        x = torch.randn(1, 3, 64, 96)
        coarse = model.coarse_scores(x)
        out = shift_and_stitch(model.coarse_scores, x, 2)
        shifted = model.coarse_scores(F.pad(x[..., 1:, 1:], (0, 1, 0, 1)))
    assert coarse.shape == (1, 4, 2, 3)
    assert out.shape == (1, 4, 4, 6)
    assert torch.equal(out[..., ::2, ::2], coarse)
    assert torch.allclose(out[..., 1::2, 1::2], shifted, atol=1e-6)
    assert not torch.allclose(out[..., 1::2, 1::2], coarse, atol=1e-3)
