"""MobileNetV3-Large/-Small: torchvision's layout, keys and parameter counts, the FCNs' taps and
geometry, and ImageNet initialisation from files with torchvision's exact keys and shapes.

torchvision cannot be imported here, so its facts are written down from its source
(torchvision/models/mobilenetv3.py @ 2f7f558158c8) and its documentation: the parameter counts
are its weights' ``num_params`` (https://pytorch.org/vision/stable/models/generated/
torchvision.models.mobilenet_v3_large.html: 5,483,032; mobilenet_v3_small: 2,542,856).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fcn_edge.errors import ModelFormatError
from fcn_edge.models import create_model, load_model, read_weights
from fcn_edge.models.geometry import chain, chain_size
from fcn_edge.models.mobilenet import (
    ARCHS, FCN_BN_MOMENTUM, FCNMobileNetV3Large, FCNMobileNetV3Small, make_divisible,
    mobilenet_v3_large, mobilenet_v3_small, tap_indices,
)
from fcn_edge.models.registry import backbones, get_backbone

pytestmark = pytest.mark.usefixtures("one_thread")

NETS = {"mobilenet_v3_large": mobilenet_v3_large, "mobilenet_v3_small": mobilenet_v3_small}
#: torchvision's published ``num_params`` of each classifier.
TORCHVISION_PARAMS = {"mobilenet_v3_large": 5_483_032, "mobilenet_v3_small": 2_542_856}
VARIANTS = ("fcn32s", "fcn16s", "fcn8s")
FCN8S_HEAD = {"score_fr.weight", "score_fr.bias", "score_pool4.weight", "score_pool4.bias",
              "upscore2.weight", "score_pool3.weight", "score_pool3.bias",
              "upscore_pool4.weight", "upscore8.weight"}


def random_state(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Every tensor of ``model``'s state dict (same keys, same shapes) drawn at random: He-scaled
    weights, BatchNorm scales near 1 and positive running variances, so that the net's
    activations neither vanish nor explode and every tensor differs from its initialisation."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, t in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(t.shape, generator=gen)
        elif t.ndim >= 2:
            out[key] = torch.randn(t.shape, generator=gen) * (2.0 / t[0].numel()) ** 0.5
        elif key.endswith("weight") and "fc" not in key:  # BatchNorm scale
            out[key] = 1.0 + 0.1 * torch.randn(t.shape, generator=gen)
        else:
            out[key] = 0.1 * torch.randn(t.shape, generator=gen)
    return out


# --- the classifiers: torchvision's layout ----------------------------------------------------
@pytest.mark.parametrize("name", NETS)
def test_classifier_parameter_counts_equal_torchvisions(name):
    model = NETS[name]()
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]


# (key, shape) read off torchvision's tables: features.1 of Large expands 16 → 16, so it has no
# expansion conv (block.0 is the depthwise); SE squeezes to make_divisible(expanded // 4).
SPOT_KEYS = {
    "mobilenet_v3_large": {
        "features.0.0.weight": (16, 3, 3, 3), "features.1.block.0.0.weight": (16, 1, 3, 3),
        "features.1.block.1.0.weight": (16, 16, 1, 1),
        "features.4.block.0.0.weight": (72, 24, 1, 1), "features.4.block.1.0.weight": (72, 1, 5, 5),
        "features.4.block.2.fc1.weight": (24, 72, 1, 1), "features.4.block.2.fc1.bias": (24,),
        "features.4.block.2.fc2.weight": (72, 24, 1, 1),
        "features.4.block.3.0.weight": (40, 72, 1, 1),
        "features.13.block.2.fc1.weight": (168, 672, 1, 1),
        "features.16.0.weight": (960, 160, 1, 1), "features.16.1.running_var": (960,),
        "classifier.0.weight": (1280, 960), "classifier.3.weight": (1000, 1280)},
    "mobilenet_v3_small": {
        "features.0.0.weight": (16, 3, 3, 3), "features.1.block.0.0.weight": (16, 1, 3, 3),
        "features.1.block.1.fc1.weight": (8, 16, 1, 1),
        "features.1.block.2.0.weight": (16, 16, 1, 1),
        "features.11.block.2.fc1.weight": (144, 576, 1, 1),
        "features.12.0.weight": (576, 96, 1, 1), "classifier.0.weight": (1024, 576),
        "classifier.3.weight": (1000, 1024)},
}
ABSENT_KEYS = {"mobilenet_v3_large": ("features.1.block.2.0.weight", "features.17.0.weight",
                                      "features.0.0.bias", "features.2.block.2.fc1.weight"),
               "mobilenet_v3_small": ("features.1.block.3.0.weight", "features.13.0.weight")}


@pytest.mark.parametrize("name", NETS)
def test_classifier_keys_and_shapes_are_torchvisions(name):
    state = NETS[name]().state_dict()
    assert {k: tuple(state[k].shape) for k in SPOT_KEYS[name]} == SPOT_KEYS[name]
    assert not any(k in state for k in ABSENT_KEYS[name])


def test_blocks_follow_the_table():
    large = mobilenet_v3_large()
    stem, first, relu_block, hs_block = (large.features[i] for i in (0, 1, 4, 7))
    assert isinstance(stem[2], nn.Hardswish) and isinstance(stem[0], nn.Conv2d)
    assert (stem[0].stride, stem[1].eps, stem[1].momentum) == ((2, 2), 0.001, 0.01)
    assert first.residual and not large.features[2].residual  # 16→16 s1; 16→24 s2
    assert isinstance(relu_block.block[1][2], nn.ReLU)
    assert isinstance(hs_block.block[1][2], nn.Hardswish)
    assert isinstance(relu_block.block[2].scale_activation, nn.Hardsigmoid)
    assert len(relu_block.block[3]) == 2  # the projection is linear: conv and BN only
    assert relu_block.depthwise().groups == 72 and relu_block.depthwise().kernel_size == (5, 5)
    assert [type(m) for m in large.classifier] == [nn.Linear, nn.Hardswish, nn.Dropout, nn.Linear]
    assert large.classifier[2].p == 0.2
    # torchvision's initialisation: He (fan-out) convolutions, N(0, 0.01) Linear, zero biases.
    assert abs(float(large.classifier[0].weight.detach().std()) - 0.01) < 0.001
    w = large.features[16][0].weight.detach()
    assert abs(float(w.std()) - (2 / 960) ** 0.5) < 0.1 * (2 / 960) ** 0.5
    assert not relu_block.block[2].fc1.bias.any() and not large.classifier[3].bias.any()


def test_make_divisible_is_the_reference_rounding():
    # 72 // 4 = 18 rounds to 16, which is more than 10 % below 18: one step up, 24.
    values = (4, 18, 30, 60, 168, 240, 3.0)
    assert [make_divisible(v) for v in values] == [8, 24, 32, 64, 168, 240, 8]


# --- the FCNs: taps and geometry -------------------------------------------------------------
def test_taps_are_the_last_block_at_each_stride():
    """pool3/pool4's place (§4.2): the deepest map at strides 8 and 16, i.e. the block right
    before the next stride-2 block; the registry's records name the same layers."""
    for name, (at8, at16) in {"mobilenet_v3_large": (6, 12), "mobilenet_v3_small": (3, 8)}.items():
        arch = ARCHS[name.split("_")[-1]]
        assert tap_indices(arch) == {8: at8, 16: at16}
        assert arch.blocks[at8].stride == 2 and arch.blocks[at16].stride == 2  # features.at+1
        assert get_backbone(name).taps == ((8, f"features.{at8}"), (16, f"features.{at16}"),
                                           (32, "conv_head"))


@pytest.mark.parametrize("backbone", NETS)
def test_fcn_keeps_torchvisions_trunk_keys(backbone):
    fcn = create_model("fcn8s", 21, backbone).state_dict()
    classifier = NETS[backbone]().state_dict()
    assert {k for k in fcn if k.startswith("features.")} == {
        k for k in classifier if k.startswith("features.")}
    hidden = classifier["classifier.0.weight"].shape
    assert tuple(fcn["conv_head.weight"].shape) == (*hidden, 1, 1)
    assert set(fcn) - set(classifier) == FCN8S_HEAD | {"conv_head.weight", "conv_head.bias"}


@pytest.mark.parametrize("backbone", NETS)
def test_tap_geometry_is_the_maps_geometry(backbone):
    """The layers ``_tap_layers`` lists give every tap's true size for every input size (a
    strided layer left out would not), cells sit on pixels 0, s, 2s … (offset 0: each
    convolution pads by half its kernel), and the derived head needs no input padding."""
    model = create_model("fcn8s", 3, backbone).eval()
    geoms = model.tap_geometry()
    for stride in (8, 16, 32):
        assert chain(geoms[stride]).stride == stride and chain(geoms[stride]).offset == 0
    plan = model.plan
    assert (plan.input_margin, plan.min_input) == (0, 1)
    assert [up.crop for *_, up in plan.skips] == [3, 3]  # one replicated cell + half a kernel
    assert (plan.final.factor, plan.final.kernel, plan.final.crop) == (8, 15, 15)
    for h in list(range(1, 41)) + [97, 131, 255]:  # every size modulo 32, and larger ones
        with torch.no_grad():
            taps = model.taps(torch.zeros(1, 3, h, 2 * h + 1))
        for stride, tap in taps.items():
            assert tap.shape[-2:] == (chain_size(geoms[stride], h),
                                      chain_size(geoms[stride], 2 * h + 1)), (h, stride)
            assert tap.shape[-2] == -(-h // stride)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("backbone", NETS)
def test_fcn_outputs_every_size(backbone, name):
    model = create_model(name, 5, backbone).eval()
    assert isinstance(model, {"mobilenet_v3_large": FCNMobileNetV3Large,
                              "mobilenet_v3_small": FCNMobileNetV3Small}[backbone])
    torch.manual_seed(0)
    for h, w in ((1, 1), (31, 47), (97, 131), (64, 64)):
        with torch.no_grad():
            out = model(torch.randn(2, 3, h, w))
        assert out.shape == (2, 5, h, w) and torch.isfinite(out).all()


def test_fcn_trains_a_step():
    """In-place Hardswish/ReLU, squeeze-excitation and the residual sums back-propagate. The
    score layers start at zero (§4.2), so the trunk's gradient appears from the second step."""
    model = create_model("fcn8s", 3, "mobilenet_v3_small").train()
    opt = torch.optim.SGD(model.parameters(), lr=get_backbone("mobilenet_v3_small").default_lr)
    x, y = torch.randn(2, 3, 64, 96), torch.randint(0, 3, (2, 64, 96))
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert model.score_fr.weight.grad.abs().sum() > 0
    assert model.features[0][0].weight.grad.abs().sum() > 0
    assert model.features[1].block[1].fc1.weight.grad.abs().sum() > 0  # squeeze-excitation


# --- torchvision-keyed files -------------------------------------------------------------------
@pytest.fixture(scope="module")
def tv_files(tmp_path_factory):
    """``{backbone: (state, path)}``: files with exactly torchvision's keys and shapes (the
    classifiers above, checked against torchvision's counts and keys), random values."""
    directory = tmp_path_factory.mktemp("tv_mobilenet")
    files = {}
    for seed, (backbone, build) in enumerate(NETS.items()):
        state = random_state(build(), seed)
        path = directory / f"{backbone}.pth"
        torch.save(state, path)
        files[backbone] = state, path
    return files


@pytest.mark.parametrize("backbone", NETS)
def test_torchvision_file_is_recognised_as_its_own_net_only(tv_files, backbone):
    state, path = tv_files[backbone]
    info = read_weights(path)
    assert (info.kind, info.backbone, info.variant) == ("torchvision", backbone, None)
    # No other record's signs match (Large and Small are never confused, whatever the order).
    matching = [s.name for s in backbones() if all(k in state for k in s.torchvision_signs)]
    assert matching == [backbone]
    other = next(b for b in NETS if b != backbone)
    with pytest.raises(ModelFormatError) as info:
        create_model("fcn32s", 3, other, weights=path)
    assert backbone in str(info.value) and other in str(info.value)


@pytest.mark.parametrize("backbone", NETS)
def test_torchvision_file_initialises_the_trunk_and_is_decapitated(tv_files, backbone):
    state, path = tv_files[backbone]
    model = create_model("fcn8s", 21, backbone, weights=path)
    own = model.state_dict()
    trunk = [k for k in state if k.startswith("features.")]
    assert len(trunk) > 200 and all(torch.equal(own[k], state[k]) for k in trunk)
    assert torch.equal(model.conv_head.weight[..., 0, 0], state["classifier.0.weight"])
    assert torch.equal(model.conv_head.bias, state["classifier.0.bias"])
    assert not model.score_fr.weight.any() and not model.score_fr.bias.any()
    assert set(model.load_report.initialised) == FCN8S_HEAD
    assert set(model.load_report.loaded) == set(trunk) | {"conv_head.weight", "conv_head.bias"}


@pytest.mark.parametrize("backbone", NETS)
def test_convolutionalised_classifier_computes_the_classifier(tv_files, backbone):
    """With 1000 classes the last Linear becomes score_fr (Figure 2). On a 32×32 image the
    stride-32 map is one cell, so global pooling is the identity and the FCN's coarse scores
    are the classifier's logits (on larger maps Hardswish between the two layers makes pooling
    and convolution not commute)."""
    state, path = tv_files[backbone]
    model = create_model("fcn32s", 1000, backbone, weights=path).eval()
    assert torch.equal(model.score_fr.weight[..., 0, 0], state["classifier.3.weight"])
    classifier = NETS[backbone]().eval()
    classifier.load_state_dict(state)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits, coarse = classifier(x), model.coarse_scores(x)
    assert coarse.shape == (1, 1000, 1, 1) and float(logits.std()) > 0.01
    torch.testing.assert_close(coarse[..., 0, 0], logits, rtol=1e-4, atol=1e-5)


def test_four_channel_model_widens_the_first_conv(tv_files):
    state, path = tv_files["mobilenet_v3_large"]
    model = create_model("fcn16s", 3, "mobilenet_v3_large", in_channels=4, weights=path)
    assert model.load_report.adapted == ("features.0.0.weight",)
    first = model.features[0][0].weight
    assert first.shape == (16, 4, 3, 3)
    torch.testing.assert_close(first[:, :3], state["features.0.0.weight"] * 0.75)
    torch.testing.assert_close(first[:, 3], state["features.0.0.weight"].mean(1) * 0.75)


@pytest.mark.parametrize("backbone", NETS)
def test_fcn_file_is_recognised_by_its_fcn_sign_and_reloads(tmp_path, backbone):
    model = create_model("fcn16s", 4, backbone, in_channels=4).eval()
    path = tmp_path / "fcn.pt"
    torch.save(model.state_dict(), path)
    info = read_weights(path)
    assert (info.kind, info.backbone, info.variant) == ("fcn", backbone, "fcn16s")
    assert [s.name for s in backbones() if s.fcn_sign in info.state_dict] == [backbone]
    again = load_model(path).eval()
    assert again.config.in_channels == 4 and isinstance(again, type(model))
    x = torch.randn(1, 4, 40, 56)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))



def test_the_fcns_batchnorm_settles_in_a_short_run():
    """The classifier keeps torchvision's momentum (0.01); the FCN takes PyTorch's 0.1: with
    0.01 a few hundred steps leave the running statistics far from the maps' own, and eval
    mode predicted background everywhere (mobilenet.py, FCN_BN_MOMENTUM)."""
    fcn = create_model("fcn8s", num_classes=3, backbone="mobilenet_v3_small")
    norms = [m for m in fcn.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and {m.momentum for m in norms} == {FCN_BN_MOMENTUM} == {0.1}
    assert {m.eps for m in norms} == {0.001}   # torchvision's, which its weights expect
    classifier = {m.momentum for m in mobilenet_v3_small().modules()
                  if isinstance(m, torch.nn.BatchNorm2d)}
    assert classifier == {0.01}
