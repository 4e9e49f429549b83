import math

import pytest
import torch
import torch.nn.functional as F

from fcn_edge.train.loss import pixel_loss


def _example():
    # Two classes, 1×2×2 image: logits favour class 0 everywhere.
    logits = torch.tensor([[[[2.0, 2.0], [2.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    target = torch.tensor([[[0, 1], [255, 0]]])
    return logits, target


def test_normalised_loss_is_the_mean_over_counted_pixels():
    logits, target = _example()
    # Counted pixels: (0,0) class 0, (0,1) class 1, (1,1) class 0; (1,0) is ignored.
    right = math.log(1 + math.exp(-2))   # -log softmax of the true class, margin +2
    wrong = math.log(1 + math.exp(2))    # margin −2
    assert pixel_loss(logits, target).item() == pytest.approx((2 * right + wrong) / 3, rel=1e-6)


def test_unnormalised_loss_is_the_sum_as_in_the_heavy_recipe():
    logits, target = _example()
    right, wrong = math.log(1 + math.exp(-2)), math.log(1 + math.exp(2))
    assert pixel_loss(logits, target, normalize=False).item() == pytest.approx(2 * right + wrong,
                                                                               rel=1e-6)


def test_class_weights_match_torch_weighted_mean():
    logits, target = _example()
    weights = torch.tensor([1.0, 3.0])
    expected = F.cross_entropy(logits, target, weight=weights, ignore_index=255)
    assert pixel_loss(logits, target, class_weights=weights).item() == pytest.approx(
        expected.item(), rel=1e-6)


def test_all_ignored_gives_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4)
    target = torch.full((1, 4, 4), 255)
    assert pixel_loss(logits, target).item() == 0.0


def test_loss_sampling_drops_whole_cells_with_probability_p():
    torch.manual_seed(0)
    logits = torch.zeros(4, 2, 64, 64, requires_grad=True)
    target = torch.zeros(4, 64, 64, dtype=torch.long)
    gen = torch.Generator().manual_seed(1)
    pixel_loss(logits, target, sample_p=0.5, cell=32, generator=gen).backward()
    # A dropped cell gets no gradient at all; a kept one gets it on every pixel.
    touched = (logits.grad.abs().sum(1) > 0).float()
    cells = touched.reshape(4, 2, 32, 2, 32).permute(0, 1, 3, 2, 4).reshape(4, 2, 2, -1)
    per_cell = cells.mean(-1)
    assert set(per_cell.unique().tolist()) <= {0.0, 1.0}  # whole cells, never part of one
    assert 0.2 < per_cell.mean().item() < 0.8              # about half kept (16 cells)


def test_loss_sampling_is_reproducible_from_the_generator():
    logits, target = torch.randn(2, 3, 70, 70), torch.randint(0, 3, (2, 70, 70))
    a = pixel_loss(logits, target, sample_p=0.3, generator=torch.Generator().manual_seed(5))
    b = pixel_loss(logits, target, sample_p=0.3, generator=torch.Generator().manual_seed(5))
    c = pixel_loss(logits, target, sample_p=0.3, generator=torch.Generator().manual_seed(6))
    assert a.item() == b.item() and a.item() != c.item()
