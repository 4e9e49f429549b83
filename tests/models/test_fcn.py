"""Tests of the FCN models (paper §3–4): shapes, parameter counts, structure, the
convolutionalised classifier (Figure 2), and the alignment of the skip architecture (Figure 3).

Cost control (2 CPU cores): geometry-only checks run on the ``meta`` device or on narrow
(``fc_channels=16``) models; real VGG16 arithmetic is limited to a few small inputs.
"""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcn_edge.errors import InputError
from fcn_edge.models import AlexNet, ResNet18, VGG16, count_parameters, create_model
from fcn_edge.models.geometry import chain

VARIANTS = ("fcn32s", "fcn16s", "fcn8s")
TRUNKS = (("vgg16", "edge"), ("vgg16", "reference"), ("alexnet", "edge"), ("resnet18", "edge"),
          ("mobilenet_v3_large", "edge"), ("mobilenet_v3_small", "edge"), ("googlenet", "edge"))
#: The trunks without fc6/fc7 (their classifier's last layer becomes score_fr directly).
CONVOLUTIONAL = ("resnet18", "mobilenet_v3_large", "mobilenet_v3_small", "googlenet")
CONFIGS = [(v, b, lay) for b, lay in TRUNKS for v in VARIANTS]
CONFIG_IDS = [f"{b}-{lay}-{v}" for v, b, lay in CONFIGS]
#: Channels of the stride-16 and stride-8 taps (pool4/pool3, pool2/pool1, layer3/layer2).
TAP_CHANNELS = {"vgg16": (512, 256), "alexnet": (192, 64), "resnet18": (256, 128),
                "mobilenet_v3_large": (112, 40), "mobilenet_v3_small": (48, 24),
                "googlenet": (832, 480)}

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------
# Output shapes
# --------------------------------------------------------------------------------------------

SHAPE_SIZES = [(1, 1), (31, 47), (333, 500), (500, 375), (257, 769), (1, 300), (300, 1),
               (34, 36), (35, 35), (64, 64), (65, 97)]


@pytest.mark.parametrize("name,backbone,layout", CONFIGS, ids=CONFIG_IDS)
def test_output_shape_all_sizes(helpers, name, backbone, layout):
    # Shapes on the meta device: PyTorch's own shape rules, every crop and fusion executed.
    model = helpers.meta_model(name, backbone, layout)
    with torch.no_grad():
        for h, w in SHAPE_SIZES:
            out = model(torch.empty(2, 3, h, w, device="meta"))
            assert tuple(out.shape) == (2, 5, h, w), (h, w)


# Each reference forward computes VGG16 on at least 201×201 pixels: only its FCN-8s runs here
# (FCN-32s runs for real in test_mirror_equivariance and the bilinear-interpolation test).
REAL_CONFIGS = [c for c in CONFIGS if c[2] == "edge" or c[0] == "fcn8s"]


@pytest.mark.parametrize("name,backbone,layout", REAL_CONFIGS,
                         ids=[f"{b}-{lay}-{v}" for v, b, lay in REAL_CONFIGS])
def test_forward_small_inputs_real(shared_model, name, backbone, layout):
    model = shared_model(name, backbone, layout)
    sizes = [(1, 1)] if layout == "reference" else [(1, 1), (31, 47)]
    for h, w in sizes:
        torch.manual_seed(h * 100 + w)
        with torch.no_grad():
            out = model(torch.randn(2, 3, h, w))
        assert out.shape == (2, 5, h, w)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()
        assert out.abs().max() > 0  # random score layers: a real, non-zero prediction


@pytest.mark.parametrize("backbone,sizes", [
    ("alexnet", [(333, 500), (500, 375), (257, 769)]),
    ("resnet18", [(257, 769)]),
    ("vgg16", [(97, 129)]),
    ("mobilenet_v3_large", [(257, 769)]),
    ("mobilenet_v3_small", [(333, 500)]),
    ("googlenet", [(257, 769)]),
])
def test_forward_large_inputs_real(shared_model, backbone, sizes):
    model = shared_model("fcn8s", backbone)
    for h, w in sizes:
        torch.manual_seed(h)
        with torch.no_grad():
            out = model(torch.randn(2, 3, h, w))
        assert out.shape == (2, 5, h, w)
        assert torch.isfinite(out).all()
        # The two images of the batch get different predictions (no batch mixing/broadcast).
        assert not torch.allclose(out[0], out[1])


SWEEP = [(n, (n * 29) % 70 + 1) for n in range(1, 71)]  # every height 1..70, mixed widths


@pytest.mark.parametrize("backbone", ["alexnet", *CONVOLUTIONAL])
def test_size_sweep_real(shared_model, backbone):
    model = shared_model("fcn8s", backbone)
    with torch.no_grad():
        for h, w in SWEEP + [(w, h) for h, w in SWEEP[::5]]:
            out = model(torch.ones(1, 3, h, w))
            assert out.shape == (1, 5, h, w), (h, w)
            assert torch.isfinite(out).all(), (h, w)


@pytest.mark.parametrize("layout", ["edge", "reference"])
@pytest.mark.parametrize("name", VARIANTS)
def test_size_sweep_vgg16_meta(helpers, name, layout):
    # Real VGG16 on 70 sizes is too slow for this suite; the meta device runs the same code.
    model = helpers.meta_model(name, "vgg16", layout)
    with torch.no_grad():
        for h, w in SWEEP:
            out = model(torch.empty(1, 3, h, w, device="meta"))
            assert tuple(out.shape) == (1, 5, h, w), (h, w)


def test_wrong_input_rank_or_channels(shared_model):
    model = shared_model("fcn8s", "alexnet")
    with pytest.raises(ValueError, match="N×3×H×W"):
        model(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="N×3×H×W"):
        model(torch.zeros(1, 1, 64, 64))


# --------------------------------------------------------------------------------------------
# Parameter counts
# --------------------------------------------------------------------------------------------

def _meta(factory, *args, **kwargs):
    with torch.device("meta"):
        return factory(*args, **kwargs)


def test_classifier_parameter_counts_match_torchvision():
    assert count_parameters(_meta(VGG16)) == 138_357_544
    assert count_parameters(_meta(AlexNet)) == 61_100_840
    assert count_parameters(ResNet18()) == 11_689_512  # (CPU: kaiming init on meta is slow)


def test_fcn8s_vgg16_has_134m_trainable_parameters():
    # conv1_1 … conv5_3                                    14,714,688
    # fc6   7·7·512·4096 + 4096 = 102,760,448 + 4,096  =  102,764,544
    # fc7   4096·4096 + 4096                           =   16,781,312
    # score_fr    4096·21 + 21                         =       86,037
    # score_pool4  512·21 + 21                         =       10,773
    # score_pool3  256·21 + 21                         =        5,397
    #                                                     -----------
    #                                                     134,362,751  (the paper's "134M")
    # Fixed bilinear upsampling (depthwise): 21·(4² + 4² + 16²) = 6,048 more, not trainable.
    model = _meta(create_model, "fcn8s", num_classes=21, backbone="vgg16")
    assert count_parameters(model, trainable_only=True) == 134_362_751
    assert count_parameters(model) == 134_362_751 + 21 * (16 + 16 + 256)
    reference = _meta(create_model, "fcn8s", num_classes=21, backbone="vgg16", layout="reference")
    assert count_parameters(reference, trainable_only=True) == 134_362_751


@pytest.mark.parametrize("backbone,classifier", [
    ("vgg16", 138_357_544), ("alexnet", 61_100_840), ("resnet18", 11_689_512),
    # torchvision's published counts (its weights' ``num_params``); GoogLeNet's without the
    # auxiliary classifiers, which are no part of the FCN
    ("mobilenet_v3_large", 5_483_032), ("mobilenet_v3_small", 2_542_856),
    ("googlenet", 6_624_904)])
def test_convolutionalised_classifier_keeps_every_parameter(backbone, classifier):
    # §3.1: fc layers become convolutions with the same weights; with 1000 classes score_fr is
    # the classifier's last layer, so FCN-32s has exactly the classifier's trainable parameters.
    if backbone in CONVOLUTIONAL:  # (CPU: kaiming init on meta is slow, and these are cheap)
        model = create_model("fcn32s", num_classes=1000, backbone=backbone)
    else:
        model = _meta(create_model, "fcn32s", num_classes=1000, backbone=backbone)
    assert count_parameters(model, trainable_only=True) == classifier


@pytest.mark.parametrize("backbone", ["vgg16", "alexnet", *CONVOLUTIONAL])
def test_parameter_count_relationships(helpers, backbone, classes=7):
    c16, c8 = TAP_CHANNELS[backbone]
    models = {v: helpers.meta_model(v, backbone, num_classes=classes) for v in VARIANTS}
    trainable = {v: count_parameters(m, trainable_only=True) for v, m in models.items()}
    total = {v: count_parameters(m) for v, m in models.items()}
    # FCN-16s adds score_pool4 (c16·C + C); FCN-8s adds score_pool3 (c8·C + C).
    assert trainable["fcn16s"] - trainable["fcn32s"] == c16 * classes + classes
    assert trainable["fcn8s"] - trainable["fcn16s"] == c8 * classes + classes
    # The only frozen parameters are the depthwise bilinear kernels: C·Σ k².
    for v, m in models.items():
        kernels = [m.plan.final.kernel] + [up.kernel for *_, up in m.plan.skips]
        assert total[v] - trainable[v] == classes * sum(k * k for k in kernels)
    learnable = helpers.meta_model("fcn8s", backbone, num_classes=classes,
                                   learnable_upsampling=True)
    assert count_parameters(learnable, trainable_only=True) == total["fcn8s"]


# --------------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backbone,kernel,c_in", [("vgg16", 7, 512), ("alexnet", 6, 256)])
def test_fc6_fc7_score_fr_are_convolutions(backbone, kernel, c_in):
    model = _meta(create_model, "fcn32s", num_classes=21, backbone=backbone)
    assert isinstance(model.fc6, nn.Conv2d)
    assert model.fc6.kernel_size == (kernel, kernel)
    assert (model.fc6.in_channels, model.fc6.out_channels) == (c_in, 4096)
    assert model.fc7.kernel_size == (1, 1)
    assert (model.fc7.in_channels, model.fc7.out_channels) == (4096, 4096)
    assert model.score_fr.kernel_size == (1, 1)
    assert (model.score_fr.in_channels, model.score_fr.out_channels) == (4096, 21)
    assert model.drop6.p == 0.5 and model.drop7.p == 0.5


def test_resnet18_scores_layer4_directly():
    model = create_model("fcn8s", num_classes=21, backbone="resnet18")
    assert not hasattr(model, "fc6") and not hasattr(model, "fc")
    assert model.score_fr.kernel_size == (1, 1)
    assert (model.score_fr.in_channels, model.score_fr.out_channels) == (512, 21)
    assert (model.score_pool4.in_channels, model.score_pool3.in_channels) == (256, 128)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())


@pytest.mark.parametrize("backbone", ["vgg16", "alexnet", *CONVOLUTIONAL])
def test_score_layers_zero_initialised(helpers, backbone):
    model = helpers.small_model("fcn8s", backbone)
    for name, layer in helpers.score_layers(model).items():
        assert torch.count_nonzero(layer.weight) == 0 and torch.count_nonzero(layer.bias) == 0, name
    torch.manual_seed(0)
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        out = model(x)
        # The trunk itself is random (not zero) …
        assert model._trunk(x)[32].abs().max() > 0
    # … but a fresh FCN predicts all zeros.
    assert out.shape == (1, 5, 40, 56) and torch.count_nonzero(out) == 0


@pytest.mark.parametrize("backbone,size", [("vgg16", 32), ("alexnet", 64)])
def test_dropout_only_in_training(helpers, backbone, size):
    torch.manual_seed(0)
    model = helpers.randomize_scores(helpers.small_model("fcn32s", backbone), std=0.5)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        model.train()
        a, b = model(x), model(x)
        model.eval()
        c, d = model(x), model(x)
    assert not torch.allclose(a, b)
    assert torch.equal(c, d)
    # dropout=0 makes training forwards deterministic too.
    still = helpers.small_model("fcn32s", backbone, dropout=0.0)
    still.load_state_dict(model.state_dict())
    still.train()
    with torch.no_grad():
        assert torch.equal(still(x), still(x))
        assert torch.allclose(still(x), c, atol=1e-6)


@pytest.mark.parametrize("learnable", [False, True])
def test_upsampling_fixed_unless_learnable(helpers, learnable):
    model = helpers.randomize_scores(
        helpers.small_model("fcn8s", "resnet18", learnable_upsampling=learnable))
    ups = {n: getattr(model, n) for n in helpers.UPSCORE_LAYERS if hasattr(model, n)}
    assert set(ups) == {"upscore2", "upscore_pool4", "upscore8"}
    for layer in ups.values():
        assert layer.weight.requires_grad is learnable
    model(torch.randn(1, 3, 40, 40)).square().sum().backward()
    for name, layer in ups.items():
        assert (layer.weight.grad is not None) is learnable, name
    assert model.score_fr.weight.grad is not None and model.score_fr.weight.grad.abs().sum() > 0


VGG_CONVS = [f"conv{b}_{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]


@pytest.mark.parametrize("name,heads", [
    ("fcn32s", ["score_fr.weight", "score_fr.bias", "upscore.weight"]),
    ("fcn16s", ["score_fr.weight", "score_fr.bias", "score_pool4.weight", "score_pool4.bias",
                "upscore2.weight", "upscore16.weight"]),
    ("fcn8s", ["score_fr.weight", "score_fr.bias", "score_pool4.weight", "score_pool4.bias",
               "score_pool3.weight", "score_pool3.bias", "upscore2.weight",
               "upscore_pool4.weight", "upscore8.weight"]),
])
def test_reference_state_dict_keys_are_the_released_names(name, heads):
    model = _meta(create_model, name, num_classes=21, backbone="vgg16", layout="reference")
    trunk = [f"{layer}.{leaf}" for layer in VGG_CONVS + ["fc6", "fc7"]
             for leaf in ("weight", "bias")]
    assert set(model.state_dict()) == set(trunk + heads)
    assert model.state_dict()["conv1_1.weight"].shape == (64, 3, 3, 3)
    assert model.conv1_1.padding == (100, 100) and model.conv1_2.padding == (1, 1)
    assert model.fc6.padding == (0, 0)


# --------------------------------------------------------------------------------------------
# Fully convolutional: the classifier's logits are a cell of the FCN's score map (Figure 2)
# --------------------------------------------------------------------------------------------

def _narrow_classifier(backbone: str) -> nn.Module:
    """A random classifier with torchvision's key names; the 4096-wide fc layers of VGG16 and
    AlexNet are made 16 wide (a smaller classifier, same conversion) to save 0.5 GB."""
    torch.manual_seed(11)
    if backbone == "resnet18":
        clf = ResNet18()
        with torch.no_grad():  # non-trivial BatchNorm statistics, so that they must be loaded
            for m in clf.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.1)
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        return clf.eval()
    cls, flat = (VGG16, 512 * 7 * 7) if backbone == "vgg16" else (AlexNet, 256 * 6 * 6)
    clf = _meta(cls)
    clf.features.to_empty(device="cpu")
    if backbone == "vgg16":
        clf.classifier = nn.Sequential(nn.Linear(flat, 16), nn.ReLU(True), nn.Dropout(),
                                       nn.Linear(16, 16), nn.ReLU(True), nn.Dropout(),
                                       nn.Linear(16, 1000))
    else:
        clf.classifier = nn.Sequential(nn.Dropout(), nn.Linear(flat, 16), nn.ReLU(True),
                                       nn.Dropout(), nn.Linear(16, 16), nn.ReLU(True),
                                       nn.Linear(16, 1000))
    # He initialisation keeps the activations' scale through the ReLUs, so the logits depend on
    # the image (PyTorch's default init shrinks them until only the biases are left).
    with torch.no_grad():
        for m in clf.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.normal_(m.bias, std=0.01)
    return clf.eval()


@pytest.mark.parametrize("backbone", ["vgg16", "alexnet", "resnet18"])
def test_fcn_contains_the_classifier(tmp_path, backbone):
    clf = _narrow_classifier(backbone)
    path = tmp_path / f"{backbone}.pth"
    torch.save(clf.state_dict(), path)
    options = {} if backbone == "resnet18" else {"fc_channels": 16}
    model = create_model("fcn32s", num_classes=1000, backbone=backbone, weights=path,
                         **options).eval()
    assert "score_fr.weight" in model.load_report.loaded

    torch.manual_seed(12)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        logits = clf(x)
        heat = model.coarse_scores(x)
    assert heat.shape == (1, 1000, 7, 7)
    tol = 1e-4 * logits.abs().max().item()
    if backbone == "resnet18":
        # Global average pooling then fc = fc on every cell then the mean (all linear).
        assert torch.allclose(heat.mean(dim=(2, 3)), logits, rtol=0, atol=tol)
    else:
        # fc6 (7×7 resp. 6×6, padded) is centred on cell 3 exactly where the classifier's
        # flattened pool5 lies: the FCN's centre cell is the classifier.
        assert torch.allclose(heat[..., 3, 3], logits, rtol=0, atol=tol)
    # The scores really depend on where the classifier looks: a neighbouring cell is far off.
    assert (heat[..., 2, 3] - logits).abs().max() > 100 * tol

    # A larger image gives a heat map: ⌈320/32⌉ × ⌈288/32⌉ cells for every backbone.
    if backbone == "vgg16":
        model = model.to("meta")  # real VGG16 arithmetic on 320×288 is not needed for a shape
    with torch.no_grad():
        big = model.coarse_scores(torch.zeros(1, 3, 320, 288, device=model.score_fr.weight.device))
    assert big.shape == (1, 1000, 10, 9)


# --------------------------------------------------------------------------------------------
# The skip architecture: fusion and alignment
# --------------------------------------------------------------------------------------------

def _coarse_and_fine(helpers, backbone, fine_name):
    """FCN-32s with random score_fr, and a finer FCN with the same trunk and score_fr and
    zero-initialised skip score layers (the paper's staged initialisation, §4.2)."""
    torch.manual_seed(0)
    coarse = helpers.small_model("fcn32s", backbone)
    helpers.randomize_scores(helpers.he_init(coarse, seed=1), seed=1, std=0.3)
    fine = helpers.small_model(fine_name, backbone)
    shared = {k: v for k, v in coarse.state_dict().items() if not k.startswith("upscore")}
    report = fine.load_state_dict(shared, strict=False)
    new = {"score_pool4", "upscore2", "upscore16" if fine_name == "fcn16s" else "upscore8"}
    if fine_name == "fcn8s":
        new |= {"score_pool3", "upscore_pool4"}
    assert {k.split(".")[0] for k in report.missing_keys} == new
    assert report.unexpected_keys == []
    return coarse, fine


@pytest.mark.parametrize("backbone", ["alexnet", "resnet18", "mobilenet_v3_large",
                                      "mobilenet_v3_small"])
@pytest.mark.parametrize("fine_name", ["fcn16s", "fcn8s"])
def test_zero_skips_reproduce_fcn32s_exactly(helpers, backbone, fine_name):
    # AlexNet and ResNet18 cells sit on pixels (odd kernels): 2×, 2×, then 8× linear
    # interpolation through nodes that include the coarse nodes is the same piecewise-linear
    # function as 32× interpolation, and the edge clamping agrees too. With zero skips a finer
    # net starts from exactly FCN-32s's prediction (the point of the paper's staged
    # initialisation, §4.2); any crop off by one would break the equality.
    coarse, fine = _coarse_and_fine(helpers, backbone, fine_name)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        out32, out_fine = coarse(x), fine(x)
    scale = out32.abs().max()
    assert scale > 0.1
    assert torch.allclose(out_fine, out32, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("backbone", ["vgg16", "googlenet"])
def test_zero_skips_nearly_reproduce_fcn32s(helpers, backbone):
    # VGG16 cells fall between pixels (even kernels). 2× upsampling samples the 32× linear
    # interpolation exactly (fine cells at coarse centre ± 8 px get ¾·v_i + ¼·v_i±1), but those
    # two samples straddle the coarse centre, so interpolating between them cuts the corner at
    # that kink: error ⅛·|v_i−1 − 2v_i + v_i+1| per axis there, none where the map is linear.
    # So FCN-8s with zero skips starts close to, not exactly at, FCN-32s's prediction
    # (measured: mean difference 1–1.6 % of the largest score, ~2.5 % of the labels change).
    # GoogLeNet's cells sit on pixels, but its stride-32 centres (32·i + 22) fall half-way
    # between its stride-16 ones (16·j + 14): the same corner-cutting, at the same places.
    coarse, fine = _coarse_and_fine(helpers, backbone, "fcn8s")
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        out32, out8 = coarse(x), fine(x)
    diff, scale = (out8 - out32).abs(), out32.abs().max()
    assert diff.mean() < 0.03 * scale
    assert diff.max() < 0.3 * scale
    assert diff.max() > 1e-3 * scale


@pytest.mark.parametrize("backbone,layout", TRUNKS, ids=[f"{b}-{lay}" for b, lay in TRUNKS])
def test_fcn32s_output_is_bilinear_interpolation_of_coarse_scores(shared_model, backbone, layout):
    """FCN-32s's output at pixel p is the coarse score map bilinearly interpolated at p's cell
    coordinate (p − offset)/32 — grid_sample with align_corners=True. Beyond the outer cell
    centres the edge layouts clamp (``padding_mode="border"``, their replicated score cells)
    and the reference nets fade to zero one cell out (``"zeros"``, a plain deconvolution)."""
    model = shared_model("fcn32s", backbone, layout)
    h, w = (40, 72) if layout == "reference" else (100, 150)
    torch.manual_seed(9)
    x = torch.randn(1, 3, h, w)
    seen = []
    hook = model.score_fr.register_forward_hook(lambda mod, inp, out: seen.append(out))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        hook.remove()
    coarse = seen[0]
    ch, cw = coarse.shape[-2:]
    assert ch >= 2 and cw >= 2
    offset = float(chain(model.tap_geometry()[32]).offset)

    def normalised(n, cells):  # align_corners=True: −1 and +1 are the first and last centres
        return (torch.arange(n, dtype=torch.float32) - offset) / 32 * 2 / (cells - 1) - 1

    gy, gx = torch.meshgrid(normalised(h, ch), normalised(w, cw), indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None]
    padding = "border" if layout == "edge" else "zeros"
    expected = F.grid_sample(coarse, grid, mode="bilinear", padding_mode=padding,
                             align_corners=True)
    scale = coarse.abs().max()
    assert torch.allclose(out, expected, rtol=0, atol=1e-5 * scale)
    # Sensitivity: the same interpolation one pixel off does not match.
    shifted = F.grid_sample(coarse, grid + 2 / 32 / (cw - 1) * torch.tensor([1.0, 0.0]),
                            mode="bilinear", padding_mode=padding, align_corners=True)
    assert not torch.allclose(out, shifted, rtol=0, atol=1e-3 * scale)


def test_skips_change_the_prediction(helpers):
    coarse, fine = _coarse_and_fine(helpers, "resnet18", "fcn8s")
    helpers.randomize_scores(fine, seed=2, std=0.3)
    fine.score_fr.load_state_dict(coarse.score_fr.state_dict())
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        out32, out8 = coarse(x), fine(x)
    assert out8.shape == out32.shape
    assert (out8 - out32).abs().max() > 0.2 * out32.abs().max()
    # The labelling changes too, not just the logits' scale.
    assert (out8.argmax(1) != out32.argmax(1)).float().mean() > 0.05


def _ramp(y, x):
    return 3.0 * y + 2.0 * x  # linear: bilinear interpolation reproduces it exactly


@pytest.mark.parametrize("name,backbone,layout", CONFIGS, ids=CONFIG_IDS)
def test_head_alignment_with_ramp_taps(helpers, name, backbone, layout):
    """Replace the trunk by taps whose channel 0 holds ``ramp(cell centre)`` (centres from the
    derived geometry) and let the score layers pass that channel on, split across the skips.
    Every upsampling/crop/fusion then must reproduce ``ramp(pixel)`` at each pixel: a crop off
    by one pixel anywhere shifts the ramp and fails."""
    model = helpers.small_model(name, backbone, layout).double()
    layers = helpers.score_layers(model)
    weights = dict(zip(("score_fr", "score_pool4", "score_pool3"), (0.5, 0.3, 0.2)))
    norm = sum(weights[n] for n in layers)
    with torch.no_grad():
        for n, layer in layers.items():
            layer.weight.zero_()
            layer.bias.zero_()
            layer.weight[:, 0] = weights[n] / norm  # every class = its share of channel 0
    tap_layer = {32: "score_fr", 16: "score_pool4", 8: "score_pool3"}

    def fake_trunk(x, shift=0.0):
        h, w = x.shape[-2:]
        taps = {}
        for s, layer_name in tap_layer.items():
            ys = torch.tensor([float(c) + shift for c in helpers.cell_centres(model, s, h)])
            xs = torch.tensor([float(c) for c in helpers.cell_centres(model, s, w)])
            channels = layers[layer_name].in_channels if layer_name in layers else 1
            tap = torch.zeros(x.shape[0], channels, len(ys), len(xs), dtype=torch.float64)
            tap[:, 0] = _ramp(ys[:, None], xs[None, :])
            taps[s] = tap
        return taps

    H, W = 224, 288
    x = torch.zeros(1, 3, H, W, dtype=torch.float64)
    model._trunk = fake_trunk
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 5, H, W)
    # Interpolation is exact between the first and last cell centres of every fused map; keep a
    # further 32 px (one coarse cell) away from them.
    used = [s for s, n in tap_layer.items() if n in layers]

    def interior(n):
        firsts = [helpers.cell_centres(model, s, n)[0] for s in used]
        lasts = [helpers.cell_centres(model, s, n)[-1] for s in used]
        lo, hi = max(max(firsts) + 32, Fraction(0)), min(min(lasts) - 32, Fraction(n - 1))
        return slice(int(-(-lo // 1)), int(hi // 1) + 1)

    rows, cols = interior(H), interior(W)
    assert rows.stop - rows.start >= 100 and cols.stop - cols.start >= 150
    yy = torch.arange(H, dtype=torch.float64)[:, None]
    xx = torch.arange(W, dtype=torch.float64)[None, :]
    expected = _ramp(yy, xx)[rows, cols]
    for c in range(5):
        assert torch.allclose(out[0, c, rows, cols], expected, atol=1e-6)

    # Negative control: taps one pixel off (cells believed 1 px lower) give a shifted ramp.
    model._trunk = lambda t: fake_trunk(t, shift=1.0)
    with torch.no_grad():
        off = model(x)
    assert torch.allclose(off[0, 0, rows, cols], expected + 3.0, atol=1e-6)


def _symmetric_width(model) -> int:
    # Cells sit at 32·i + o: the grid is mirror-symmetric on W pixels when the last cell centre
    # 32·(k−1) + o equals W − 1 − o, i.e. W ≡ 2o + 1 (mod 32): vgg16 edge (o = 15.5) 64,
    # reference (o = 12.5) 58, alexnet (o = 15) 63, resnet18 and mobilenets (o = 0) 65,
    # googlenet (o = 22) 77.
    offset = chain(model.tap_geometry()[32]).offset
    r = int(2 * offset + 1) % 32
    return r + 32 if r >= 16 else r + 64


# Real VGG16 on ≥ 201×201 pixels per reference forward: its FCN-16s is left to the ramp test
# (FCN-8s exercises the same pool4 crop and more).
MIRROR_CONFIGS = [c for c in CONFIGS if c != ("fcn16s", "vgg16", "reference")]


@pytest.mark.parametrize("name,backbone,layout", MIRROR_CONFIGS,
                         ids=[f"{b}-{lay}-{v}" for v, b, lay in MIRROR_CONFIGS])
def test_mirror_equivariance(helpers, name, backbone, layout):
    """With left-right symmetric kernels, an aligned network commutes with a horizontal flip
    on a width whose cell grid is symmetric. Any misplaced crop or kernel parity breaks it."""
    torch.manual_seed(3)
    model = helpers.he_init(helpers.small_model(name, backbone, layout), seed=3)
    helpers.randomize_scores(model, std=0.3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_((m.weight + m.weight.flip(-1)) / 2)
    w = _symmetric_width(model)
    assert w == {"vgg16-edge": 64, "vgg16-reference": 58, "alexnet-edge": 63,
                 "resnet18-edge": 65, "mobilenet_v3_large-edge": 65,
                 "mobilenet_v3_small-edge": 65, "googlenet-edge": 77}[f"{backbone}-{layout}"]
    h = 8
    x = torch.randn(1, 3, h, w + 1)
    with torch.no_grad():
        out = model(x[..., :w])
        mirrored = model(x[..., :w].flip(-1)).flip(-1)
        assert torch.allclose(out, mirrored, atol=1e-5 * out.abs().max().item())
        assert out.abs().max() > 0
        if layout == "edge" and name == "fcn8s":
            # Control: one pixel wider, the grid is no longer symmetric and neither is the output.
            out1 = model(x)
            mirrored1 = model(x.flip(-1)).flip(-1)
            assert not torch.allclose(out1, mirrored1, atol=1e-3 * out1.abs().max().item())


def test_translation_equivariance_by_32_pixels():
    """ResNet18 in eval mode at initialisation has bias-free convolutions and identity-like
    BatchNorm, so zero regions stay zero: an object on a zero canvas moved down by 32 pixels
    (a multiple of every stride) moves the whole FCN-8s prediction by 32 pixels."""
    torch.manual_seed(4)
    model = create_model("fcn8s", num_classes=3, backbone="resnet18").eval()
    with torch.no_grad():
        for layer in (model.score_fr, model.score_pool4, model.score_pool3):
            nn.init.normal_(layer.weight, std=0.3)
            layer.bias.zero_()
        canvas = torch.zeros(1, 3, 512, 64)
        canvas[..., 224:288, :] = torch.randn(1, 3, 64, 64)
        moved = F.pad(canvas, (0, 0, 32, 0))
        out, out_moved = model(canvas), model(moved)
    assert out_moved.shape == (1, 3, 544, 64)
    assert out.abs().max() > 0.1
    assert torch.allclose(out_moved[..., 32:, :], out, atol=1e-5 * out.abs().max().item())
    assert out_moved[..., :32, :].abs().max() < 1e-6
    # By 16 pixels the stride-32 grid is not preserved and the prediction is not just shifted.
    with torch.no_grad():
        out_16 = model(F.pad(canvas, (0, 0, 16, 0)))
    assert not torch.allclose(out_16[..., 16:, :], out, atol=1e-2 * out.abs().max().item())


def test_integer_images_are_refused_with_a_clear_error(shared_model):
    model = shared_model("fcn32s", "resnet18", "edge")
    with pytest.raises(InputError, match="float tensor .*torch.uint8 of shape \\(1, 3, 8, 8\\)"):
        model(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
