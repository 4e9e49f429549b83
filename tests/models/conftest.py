"""Shared helpers for the fcn_edge.models tests.

Models are kept cheap: ``fc_channels=16`` narrows fc6/fc7 (the 4096-wide layers hold 90% of
VGG16's parameters but no geometry), everything runs in ``eval()`` under ``no_grad``, and
models that several tests read are built once per session. Tests that need many large inputs
only for their *shapes* run the real forward on PyTorch's ``meta`` device: the same modules
and the same shape rules (including the "output size is too small" errors), without the
arithmetic.
"""
from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fcn_edge.models import create_model
from fcn_edge.models.fcn import FCN
from fcn_edge.models.geometry import chain, chain_size
from fcn_edge.models.registry import get_backbone

VARIANTS = ("fcn32s", "fcn16s", "fcn8s")
#: (backbone, layout) pairs that can be built; the reference layout is VGG16 only.
TRUNKS = (("vgg16", "edge"), ("vgg16", "reference"), ("alexnet", "edge"), ("resnet18", "edge"))
SCORE_LAYERS = ("score_fr", "score_pool4", "score_pool3")
UPSCORE_LAYERS = ("upscore", "upscore2", "upscore16", "upscore_pool4", "upscore8")


def small_model(name: str, backbone: str, layout: str = "edge", num_classes: int = 5,
                **options) -> FCN:
    """A cheap FCN in eval mode (fc6/fc7 16 wide where the backbone has them)."""
    if get_backbone(backbone).fc_layers:
        options.setdefault("fc_channels", 16)
    return create_model(name, num_classes=num_classes, backbone=backbone, layout=layout,
                        **options).eval()


def meta_model(name: str, backbone: str, layout: str = "edge", num_classes: int = 5,
               **options) -> FCN:
    """The same model with every tensor on the meta device (shapes only, no memory)."""
    if backbone == "resnet18":
        # Kaiming-normal init on meta triggers a one-off 2-second import; CPU init is 0.2 s.
        return small_model(name, backbone, layout, num_classes, **options).to("meta")
    with torch.device("meta"):
        return small_model(name, backbone, layout, num_classes, **options)


def randomize_scores(model: nn.Module, seed: int = 0, std: float = 0.05) -> nn.Module:
    """Give the zero-initialised score layers random weights and biases (in place)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in SCORE_LAYERS:
            layer = getattr(model, name, None)
            if layer is not None:
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * std)
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * std)
    return model


def he_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-initialise the trunk's convolutions (not the score layers) with He's rule.

    PyTorch's default init shrinks activations layer by layer, so through VGG16 or AlexNet the
    score map of a random net is almost constant (its spatial spread ~0.3 % of its size) and
    a misaligned crop would hardly show; He's init keeps the spatial structure.
    """
    gen = torch.Generator().manual_seed(seed)
    scores = {id(getattr(model, n, None)) for n in SCORE_LAYERS}
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and id(m) not in scores:
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.01)
    return model


def score_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: getattr(model, n) for n in SCORE_LAYERS if hasattr(model, n)}


def cell_centres(model: FCN, stride: int, n: int) -> list[Fraction]:
    """Input-pixel positions of the cells of tap ``stride`` along an axis of length ``n``."""
    geoms = model.tap_geometry()[stride]
    where = chain(geoms)
    return [where.stride * i + where.offset for i in range(chain_size(geoms, n))]


@pytest.fixture(scope="session")
def helpers():
    """The helpers above, for test modules (``from conftest import`` is not reliable when
    several test folders have a conftest.py)."""
    return SimpleNamespace(small_model=small_model, meta_model=meta_model,
                           randomize_scores=randomize_scores, he_init=he_init,
                           score_layers=score_layers,
                           cell_centres=cell_centres, VARIANTS=VARIANTS, TRUNKS=TRUNKS,
                           SCORE_LAYERS=SCORE_LAYERS, UPSCORE_LAYERS=UPSCORE_LAYERS)


@pytest.fixture(scope="session")
def shared_model():
    """``shared_model(name, backbone, layout)``: a cached small model with a He-initialised
    trunk and random score layers, in eval mode. Tests must not modify it."""
    cache: dict[tuple, FCN] = {}

    def get(name: str, backbone: str, layout: str = "edge") -> FCN:
        key = (name, backbone, layout)
        if key not in cache:
            torch.manual_seed(1234)
            model = he_init(small_model(name, backbone, layout), seed=3)
            cache[key] = randomize_scores(model, seed=7)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def one_thread():
    """Run a test module single-threaded, then restore the thread count. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")`` (other files here are unaffected).

    Their tensors are small: on the 2-core test machine two OpenMP threads gain little, and
    when other test processes share the cores, spinning threads make small convolutions 3–4×
    slower (measured: a 70-size ResNet18 sweep took 8.3 s with 2 threads, 2.4 s with 1).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
