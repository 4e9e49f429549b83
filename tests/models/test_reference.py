"""The ``reference`` layout reproduces the released Caffe FCN-VGG16 nets (voc-fcn8s/16s/32s).

The package *derives* every crop offset and deconvolution size from the layer geometry. This
file *states* them, as the released prototxts do, in an independent functional forward pass
(``released_forward``, torch.nn.functional only), and checks that a state dict in the released
key layout (C×C×k×k upsampling kernels, Caffe layer names) loaded with
``load_model(path, layout="reference")`` computes the same scores.

fc6/fc7 are 16 channels wide instead of 4096: the functional pass reads the widths from the
tensors, and the geometry (the point of the comparison) does not depend on them.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fcn_edge.errors import WeightsMismatchError
from fcn_edge.models import create_model, load_model, reference_state_dict

# --- The released nets, as written in fcn.berkeleyvision.org's voc-fcn*s prototxts ---------------
PAD_CONV1_1 = 100   # conv1_1: pad 100 (every other 3×3 convolution: pad 1)
CROP_POOL4 = 5      # score_pool4c = Crop(score_pool4, upscore2, axis 2, offset 5)
CROP_POOL3 = 9      # score_pool3c = Crop(score_pool3, upscore_pool4, axis 2, offset 9)
CROP_FINAL = {"fcn8s": 31, "fcn16s": 27, "fcn32s": 19}  # score = Crop(upscore*, data, offset)
UPSCORE = {  # deconvolution layer → (stride, kernel), bias_term false, C×C×k×k weights
    "upscore2": (2, 4), "upscore_pool4": (2, 4), "upscore8": (8, 16),
    "upscore16": (16, 32), "upscore": (32, 64),
}
VGG_CONVS = (("conv1_1", "conv1_2"), ("conv2_1", "conv2_2"), ("conv3_1", "conv3_2", "conv3_3"),
             ("conv4_1", "conv4_2", "conv4_3"), ("conv5_1", "conv5_2", "conv5_3"))
_TRUNK_KEYS = tuple(f"{layer}.{leaf}" for block in VGG_CONVS for layer in block
                    for leaf in ("weight", "bias")) + ("fc6.weight", "fc6.bias",
                                                       "fc7.weight", "fc7.bias")
RELEASED_KEYS = {  # the parameter blobs of each released net, by Caffe layer name
    "fcn32s": _TRUNK_KEYS + ("score_fr.weight", "score_fr.bias", "upscore.weight"),
    "fcn16s": _TRUNK_KEYS + ("score_fr.weight", "score_fr.bias", "upscore2.weight",
                             "score_pool4.weight", "score_pool4.bias", "upscore16.weight"),
    "fcn8s": _TRUNK_KEYS + ("score_fr.weight", "score_fr.bias", "upscore2.weight",
                            "score_pool4.weight", "score_pool4.bias", "upscore_pool4.weight",
                            "score_pool3.weight", "score_pool3.bias", "upscore8.weight"),
}
VARIANTS = ("fcn32s", "fcn16s", "fcn8s")
NUM_CLASSES = 3
FC = 16


def released_trunk(sd, x):
    """conv1_1 … fc7 of the released nets at test time: (pool3, pool4, fc7)."""
    taps = {}
    h = x
    for b, block in enumerate(VGG_CONVS, 1):
        for name in block:
            pad = PAD_CONV1_1 if name == "conv1_1" else 1
            h = F.relu(F.conv2d(h, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=pad))
        h = F.max_pool2d(h, kernel_size=2, stride=2, ceil_mode=True)  # Caffe rounds up
        taps[b] = h
    h = F.relu(F.conv2d(h, sd["fc6.weight"], sd["fc6.bias"]))  # 7×7, no padding; no dropout
    h = F.relu(F.conv2d(h, sd["fc7.weight"], sd["fc7.bias"]))
    return taps[3], taps[4], h


def caffe_crop(x, like, offset):
    """Caffe's Crop layer (axis 2): ``x`` cut to ``like``'s height and width at ``offset``."""
    h, w = like.shape[-2:]
    out = x[:, :, offset:offset + h, offset:offset + w]
    assert out.shape[-2:] == like.shape[-2:], "Caffe would refuse this crop"
    return out


def upscore(sd, name, x):
    stride, kernel = UPSCORE[name]
    w = sd[f"{name}.weight"]
    assert w.shape == (x.shape[1], x.shape[1], kernel, kernel)
    return F.conv_transpose2d(x, w, stride=stride)


def released_head(sd, variant, taps, image, crops=(CROP_POOL4, CROP_POOL3), final=None):
    """score_fr … score of voc-``variant``, with the prototxts' crop offsets."""
    pool3, pool4, fc7 = taps
    final = CROP_FINAL[variant] if final is None else final
    score_fr = F.conv2d(fc7, sd["score_fr.weight"], sd["score_fr.bias"])
    if variant == "fcn32s":
        return caffe_crop(upscore(sd, "upscore", score_fr), image, final)
    up2 = upscore(sd, "upscore2", score_fr)
    score_pool4 = F.conv2d(pool4, sd["score_pool4.weight"], sd["score_pool4.bias"])
    fuse_pool4 = up2 + caffe_crop(score_pool4, up2, crops[0])
    if variant == "fcn16s":
        return caffe_crop(upscore(sd, "upscore16", fuse_pool4), image, final)
    up_pool4 = upscore(sd, "upscore_pool4", fuse_pool4)
    score_pool3 = F.conv2d(pool3, sd["score_pool3.weight"], sd["score_pool3.bias"])
    fuse_pool3 = up_pool4 + caffe_crop(score_pool3, up_pool4, crops[1])
    return caffe_crop(upscore(sd, "upscore8", fuse_pool3), image, final)


# --- Released-format weights --------------------------------------------------------------------
def _randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """He-scaled random weights (activations keep their scale through 15 ReLU layers), and
    random positive per-class upsampling kernels (not bilinear: the kernel's orientation and
    per-class placement must matter)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("upscore"):
                p.mul_(0.5 + torch.rand(p.shape, generator=gen))
            elif p.ndim == 4:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """Per variant: (released-format state dict, its file, the model loaded from the file).

    The three nets share trunk weights, so the functional trunk runs once per input size.
    """
    gen = torch.Generator().manual_seed(2015)
    directory = tmp_path_factory.mktemp("released")
    source8 = create_model("fcn8s", NUM_CLASSES, "vgg16", layout="reference", fc_channels=FC)
    _randomise(source8, gen)
    shared = {k: v for k, v in source8.state_dict().items() if not k.startswith("upscore")}
    out = {}
    for variant in VARIANTS:
        if variant == "fcn8s":
            source = source8
        else:
            source = create_model(variant, NUM_CLASSES, "vgg16", layout="reference",
                                  fc_channels=FC)
            _randomise(source, gen)
            source.load_state_dict({k: v for k, v in shared.items()
                                    if k in source.state_dict()}, strict=False)
        sd = reference_state_dict(source)
        path = directory / f"voc-{variant}.pt"
        torch.save(sd, path)
        model = load_model(path, layout="reference").eval()
        out[variant] = (sd, path, model)
    return out


@pytest.fixture(scope="module")
def run(released):
    """Cached forward passes: ``run(variant, size)`` → (image, model output, released output)."""
    images, taps, results = {}, {}, {}
    trunk_sd = released["fcn8s"][0]

    def get(variant, size):
        if (variant, size) not in results:
            if size not in images:
                gen = torch.Generator().manual_seed(size[0] * 1000 + size[1])
                images[size] = torch.randn(1, 3, *size, generator=gen)
                with torch.no_grad():
                    taps[size] = released_trunk(trunk_sd, images[size])
            sd, _, model = released[variant]
            with torch.no_grad():
                ours = model(images[size])
                theirs = released_head(sd, variant, taps[size], images[size])
            results[variant, size] = (images[size], ours, theirs)
        return results[variant, size]

    get.taps = taps
    get.state_dicts = {v: released[v][0] for v in VARIANTS}
    return get


def _atol(reference: torch.Tensor) -> float:
    return 1e-5 * float(reference.abs().max()) + 1e-6


# Every variant at an odd, non-square size (ceil-mode pooling rounds up on both axes, every
# crop offset is exercised); FCN-8s, the tightest fit of the three, also at 1×1, where the
# 100-pixel padding alone carries fc6. (Each reference forward pass costs about a second on a
# laptop CPU, so the sizes are few.)
ODD = (45, 67)
CASES = [("fcn8s", (1, 1))] + [(v, ODD) for v in VARIANTS]


@pytest.mark.parametrize("variant,size", CASES, ids=[f"{v}-{h}x{w}" for v, (h, w) in CASES])
def test_reference_layout_matches_released_forward(run, variant, size):
    image, ours, theirs = run(variant, size)
    assert ours.shape == theirs.shape == (1, NUM_CLASSES, *size)
    # The scores are neither vanishing nor constant, so the comparison means something.
    assert float(theirs.std()) > 1e-2 * float(theirs.abs().max()) > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=_atol(theirs))


@pytest.mark.parametrize("crops,final", [((4, 9), 31), ((6, 9), 31), ((5, 8), 31),
                                         ((5, 10), 31), ((5, 9), 30), ((5, 9), 32)])
def test_comparison_detects_a_crop_off_by_one(run, crops, final):
    """Guard for the test above: a crop one cell off gives visibly different scores."""
    image, ours, theirs = run("fcn8s", ODD)
    shifted = released_head(run.state_dicts["fcn8s"], "fcn8s", run.taps[ODD], image,
                            crops=crops, final=final)
    assert float((shifted - ours).abs().max()) > 100 * _atol(theirs)


@pytest.mark.parametrize("variant", VARIANTS)
def test_released_key_names_load_directly(released, variant):
    sd, path, model = released[variant]
    assert set(sd) == set(RELEASED_KEYS[variant])
    for name, (_, kernel) in UPSCORE.items():
        if f"{name}.weight" in sd:
            assert sd[f"{name}.weight"].shape == (NUM_CLASSES, NUM_CLASSES, kernel, kernel)
    assert model.config.name == variant
    assert model.config.layout == "reference"
    assert model.config.num_classes == NUM_CLASSES
    assert model.config.fc_channels == FC
    assert set(model.load_report.loaded) == set(RELEASED_KEYS[variant])
    assert model.load_report.initialised == ()
    own = model.state_dict()
    for key, tensor in sd.items():
        if key.startswith("upscore"):  # stored depthwise: the released kernel's diagonal
            diag = tensor[torch.arange(NUM_CLASSES), torch.arange(NUM_CLASSES)]
            assert torch.equal(own[key].reshape(diag.shape), diag), key
        else:
            assert torch.equal(own[key], tensor), key


@pytest.mark.parametrize("variant,key", [("fcn8s", "upscore2.weight"),
                                         ("fcn32s", "upscore.weight")])
def test_upsampling_kernel_that_mixes_classes_is_refused(released, tmp_path, variant, key):
    sd = dict(released[variant][0])
    mixed = sd[key].clone()
    mixed[0, 1] = 0.05 * mixed[0, 0]  # class 1's scores leak into class 0's upsampling
    sd[key] = mixed
    path = tmp_path / "mixed.pt"
    torch.save(sd, path)
    with pytest.raises(WeightsMismatchError) as info:
        load_model(path, layout="reference")
    assert info.value.mis_shaped == [key]
    assert key in str(info.value) and "off-diagonal" in str(info.value)


def test_edge_and_reference_layouts_share_parameters_but_not_outputs(released, run):
    sd, path, reference = released["fcn8s"]
    edge = load_model(path, layout="edge").eval()
    assert edge.config.layout == "edge"
    ref_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    edge_shapes = {k: tuple(v.shape) for k, v in edge.state_dict().items()}
    assert edge_shapes == ref_shapes
    assert all(torch.equal(edge.state_dict()[k], v) for k, v in reference.state_dict().items())
    image, ours, _ = run("fcn8s", ODD)
    with torch.no_grad():
        edge_out = edge(image)
    assert edge_out.shape == ours.shape
    # Different padding means different receptive fields: the scores must differ.
    assert float((edge_out - ours).abs().max()) > 0.1 * float(ours.abs().max())


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_released_file_is_recognised_without_being_told(released, variant):
    # The released nets alone store C×C×k×k upsampling kernels: load_model gives them the
    # reference layout and Caffe's preprocessing (BGR, the mean pixel subtracted, no std).
    sd, path, told = released[variant]
    model = load_model(path).eval()
    assert (model.config.name, model.config.layout) == (variant, "reference")
    assert model.meta.color_order == "bgr"
    assert [round(m * 255, 3) for m in model.meta.mean] == [104.007, 116.669, 122.679]
    assert model.meta.std == pytest.approx((1 / 255,) * 3)
    assert model.meta.classes == ()  # NUM_CLASSES is not VOC's 21: left unnamed
    x = torch.randn(1, 3, 40, 52, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(model(x), told(x))
    assert load_model(path, layout="edge").config.layout == "edge"  # an override still wins


def test_a_bare_state_dict_of_ours_stays_edge(tmp_path):
    model = create_model("fcn8s", NUM_CLASSES, "vgg16", fc_channels=FC)
    torch.save(model.state_dict(), tmp_path / "ours.pt")
    again = load_model(tmp_path / "ours.pt")
    assert again.config.layout == "edge" and again.meta.color_order == "rgb"


def test_a_released_voc_net_names_the_voc_classes(tmp_path):
    from fcn_edge.models.pretrained_data import VOC_CATEGORIES

    source = create_model("fcn32s", 21, "vgg16", layout="reference", fc_channels=FC)
    torch.save(reference_state_dict(source), tmp_path / "fcn32s_from_caffe.pth")
    model = load_model(tmp_path / "fcn32s_from_caffe.pth")
    assert model.meta.classes == VOC_CATEGORIES and len(model.meta.palette) == 21
