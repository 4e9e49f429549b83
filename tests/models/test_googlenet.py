"""GoogLeNet (paper Table 1) with torchvision's layout and keys, and FCN-GoogLeNet.

The expected shapes and counts are read from torchvision's source (pytorch/vision
``torchvision/models/googlenet.py`` @ 8f19c7dcb5eb) and its weights documentation;
torchvision itself cannot be imported here. Its published file holds the auxiliary
classifiers (``aux1``/``aux2``), which the FCN has no place for: the files written here hold
exactly its keys and shapes, with and without them.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx.reference import ReferenceEvaluator

from fcn_edge.export.graph import DeployGraph
from fcn_edge.export.onnx_export import trace_to_onnx
from fcn_edge.models import create_model, load_model, read_weights
from fcn_edge.models.geometry import Affine, chain, chain_size, geom_of
from fcn_edge.models.googlenet import GoogLeNet, Inception, imagenet_to_half_range
from fcn_edge.runtime.processing import IMAGENET_MEAN, IMAGENET_STD

from support import awaken, ort_infer

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANTS = ("fcn32s", "fcn16s", "fcn8s")
HEAD_PREFIXES = ("score_", "upscore")
AUX = ("aux1.", "aux2.")
#: GoogLeNet_Weights.IMAGENET1K_V1 "num_params" (the classifier without its aux heads):
#: https://pytorch.org/vision/stable/models/generated/torchvision.models.googlenet.html
TORCHVISION_PARAMS = 6_624_904
#: Keys and shapes read from torchvision's source.
SHAPES = {
    "conv1.conv.weight": (64, 3, 7, 7),
    "conv1.bn.running_var": (64,),
    "conv2.conv.weight": (64, 64, 1, 1),
    "conv3.conv.weight": (192, 64, 3, 3),
    "inception3a.branch1.conv.weight": (64, 192, 1, 1),
    "inception3a.branch2.1.conv.weight": (128, 96, 3, 3),
    "inception3a.branch3.1.conv.weight": (32, 16, 3, 3),  # 3×3, not the paper's 5×5
    "inception3a.branch4.1.conv.weight": (32, 192, 1, 1),  # branch4.0 is the max pool
    "inception4e.branch4.1.bn.bias": (128,),
    "inception5b.branch1.conv.weight": (384, 832, 1, 1),
    "inception5b.branch3.1.conv.weight": (128, 48, 3, 3),
    "aux1.conv.conv.weight": (128, 512, 1, 1),
    "aux2.conv.conv.weight": (128, 528, 1, 1),
    "aux1.fc1.weight": (1024, 2048),
    "aux2.fc2.weight": (1000, 1024),
    "fc.weight": (1000, 1024),
}


def random_state(net: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """``net``'s state dict filled with He-scaled weights and random batch-norm statistics,
    so that every tensor differs from a fresh model's and activations stay in range."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, t in net.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.full_like(t, 7)
        elif key.endswith(("running_var", "bn.weight")):
            state[key] = 0.5 + torch.rand(t.shape, generator=gen)
        elif t.ndim >= 2:
            state[key] = torch.randn(t.shape, generator=gen) * (2 / t[0].numel()) ** 0.5
        else:
            state[key] = 0.1 * torch.randn(t.shape, generator=gen)
    return state


# --- the classifier ---------------------------------------------------------------------------

def test_parameter_count_is_torchvisions():
    count = sum(p.numel() for p in GoogLeNet(aux_logits=False).parameters())
    assert count == TORCHVISION_PARAMS


def test_keys_and_shapes_are_torchvisions():
    state = GoogLeNet().state_dict()
    for key, shape in SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    # 57 BasicConv2d (3 in the stem, 6 in each of 9 Inception modules) of 6 tensors each,
    # fc's 2; each aux classifier one BasicConv2d and two Linear layers.
    assert len(state) == 57 * 6 + 2 + 2 * (6 + 4)
    without = GoogLeNet(aux_logits=False).state_dict()
    assert set(state) - set(without) == {k for k in state if k.startswith(AUX)}
    # The FCN holds the trunk's keys, nothing of the classifier's head, and its own head.
    fcn = create_model("fcn8s", 21, "googlenet").state_dict()
    trunk = {k for k in fcn if not k.startswith(HEAD_PREFIXES)}
    assert trunk == {k for k in without if not k.startswith("fc.")}


def test_classifier_outputs_as_torchvisions():
    torch.manual_seed(0)
    net = GoogLeNet(num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    logits, aux2, aux1 = net.train()(x)  # training: main, aux2, aux1 (torchvision's order)
    assert logits.shape == aux2.shape == aux1.shape == (2, 10)
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 10)


def test_transform_input_is_torchvisions():
    """torchvision's pretrained GoogLeNet re-normalises an ImageNet-normalised image to
    (p − 0.5) / 0.5; extra channels (depth) pass unchanged."""
    p = torch.rand(2, 4, 5, 6)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    x = torch.cat([(p[:, :3] - mean) / std, p[:, 3:]], 1)
    scale, shift = imagenet_to_half_range(4)
    out = x * scale + shift
    torch.testing.assert_close(out[:, :3], (p[:, :3] - 0.5) / 0.5)
    assert torch.equal(out[:, 3], x[:, 3])
    # torchvision's own arithmetic, channel 0
    torch.testing.assert_close(out[:, 0], x[:, 0] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5,
                               rtol=0, atol=1e-6)


# --- FCN geometry ------------------------------------------------------------------------------

def test_inception_modules_keep_every_cell():
    module = Inception(8, 2, 2, 3, 2, 3, 2)
    for layer in module.modules():
        geom = geom_of(layer)
        if geom is not None:
            assert geom.affine == Affine() and all(geom.out_size(n) == n for n in range(1, 40))
    assert module.eval()(torch.randn(1, 8, 5, 7)).shape == (1, 10, 5, 7)


def test_taps_sit_where_the_geometry_says():
    model = create_model("fcn8s", 5, "googlenet").eval()
    geoms = model.tap_geometry()
    # conv1 (7×7, stride 2, pad 3) centres cell x on pixel 2x; maxpool1 (3, 2) on conv1 cell
    # 2x+1, pixel 4x+2; maxpool2 8x+6; maxpool3 16x+14; maxpool4 (2, 2) on 16·(2x+½)+14.
    assert {s: chain(g) for s, g in geoms.items()} == {
        8: Affine(8, 6), 16: Affine(16, 14), 32: Affine(32, 22)}
    model = model.to("meta")
    # Shapes only: the geometry predicts every ceil-mode size; sizes repeat with period 32,
    # and heights and widths here take every value mod 32.
    for n in range(15, 47):
        taps = model._trunk(torch.empty(1, 3, n, n + 41, device="meta"))
        for stride, tap in taps.items():
            assert tap.shape[-2:] == (chain_size(geoms[stride], n),
                                      chain_size(geoms[stride], n + 41)), (stride, n)
    # No margin: ceil-mode pools cover every pixel. 15: torchvision's documented minimum.
    assert (model.plan.input_margin, model.plan.min_input) == (0, 15)


@pytest.mark.parametrize("name", VARIANTS)
def test_any_input_size_gives_scores_at_that_size(name):
    torch.manual_seed(0)
    model = create_model(name, 5, "googlenet").eval()
    for h, w in [(1, 1), (31, 47), (97, 131), (64, 64), (14, 15)]:
        with torch.no_grad():
            assert model(torch.randn(2, 3, h, w)).shape == (2, 5, h, w)


# --- torchvision-keyed files -------------------------------------------------------------------

@pytest.fixture(scope="module")
def tv_googlenet(tmp_path_factory):
    """torchvision-keyed GoogLeNet files (1000 classes): with the aux heads, as torchvision
    publishes it, and without; and the classifier holding those weights."""
    directory = tmp_path_factory.mktemp("tv_googlenet")
    state = random_state(GoogLeNet(), seed=22)
    files = {"aux": directory / "googlenet-aux.pth", "plain": directory / "googlenet.pth"}
    torch.save(state, files["aux"])
    torch.save({k: v for k, v in state.items() if not k.startswith(AUX)}, files["plain"])
    classifier = GoogLeNet(aux_logits=False, transform_input=True)
    classifier.load_state_dict(torch.load(files["plain"], weights_only=True))
    return files, state, classifier.eval()


@pytest.mark.parametrize("which", ["aux", "plain"])
def test_torchvision_file_initialises_the_fcn(tv_googlenet, which):
    files, state, _ = tv_googlenet
    info = read_weights(files[which])
    assert (info.kind, info.backbone, info.variant) == ("torchvision", "googlenet", None)
    model = create_model("fcn8s", 21, "googlenet", weights=files[which])
    own = model.state_dict()
    trunk = [k for k in own if not k.startswith(HEAD_PREFIXES)]
    assert len(trunk) == 57 * 6
    for key in trunk:
        assert torch.equal(own[key], state[key]), key
    # Decapitated (21 classes): fc is dropped, the score layers stay zero; aux never loads.
    assert not model.score_fr.weight.any() and not model.score_fr.bias.any()
    assert set(model.load_report.loaded) == set(trunk)
    assert {k.split(".")[0] for k in model.load_report.initialised} == {
        "score_fr", "score_pool4", "score_pool3", "upscore2", "upscore_pool4", "upscore8"}


def test_as_many_classes_keeps_fc_as_score_fr(tv_googlenet):
    files, state, classifier = tv_googlenet
    model = create_model("fcn32s", 1000, "googlenet", weights=files["aux"]).eval()
    assert torch.equal(model.score_fr.weight, state["fc.weight"][:, :, None, None])
    assert torch.equal(model.score_fr.bias, state["fc.bias"])
    # Figure 2: averaging the coarse scores gives the classifier's logits.
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(model.coarse_scores(x).mean((2, 3)), classifier(x),
                                   rtol=1e-4, atol=1e-4)


def test_fcn_trunk_computes_torchvisions_features(tv_googlenet):
    """The FCN applies transform_input itself, so it sees what the classifier with
    transform_input=True (torchvision's pretrained setting) sees, on the same input."""
    files, _, classifier = tv_googlenet
    model = create_model("fcn8s", 21, "googlenet", weights=files["plain"]).eval()
    seen = {}
    hooks = [getattr(classifier, name).register_forward_hook(
        lambda m, i, out, name=name: seen.__setitem__(name, out))
        for name in ("inception3b", "inception4e", "inception5b")]
    try:
        x = torch.randn(2, 3, 67, 93)
        with torch.no_grad():
            classifier(x)
            taps = model.taps(x)
    finally:
        for hook in hooks:
            hook.remove()
    for stride, name in ((8, "inception3b"), (16, "inception4e"), (32, "inception5b")):
        assert float(seen[name].abs().max()) > 0
        assert torch.equal(taps[stride], seen[name]), name


def test_fcn_files_are_recognised_and_reload(tv_googlenet, tmp_path):
    files, _, _ = tv_googlenet
    for name in VARIANTS:
        model = create_model(name, 4, "googlenet", weights=files["plain"]).eval()
        torch.save(model.state_dict(), tmp_path / f"{name}.pt")
        info = read_weights(tmp_path / f"{name}.pt")
        assert (info.kind, info.backbone, info.variant) == ("fcn", "googlenet", name)
    again = load_model(tmp_path / "fcn8s.pt").eval()
    x = torch.randn(1, 3, 40, 50)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_four_input_channels_widen_conv1(tv_googlenet):
    files, state, _ = tv_googlenet
    model = create_model("fcn16s", 3, "googlenet", in_channels=4, weights=files["aux"])
    assert model.load_report.adapted == ("conv1.conv.weight",)
    weight, source = model.conv1.conv.weight, state["conv1.conv.weight"]
    assert weight.shape == (64, 4, 7, 7)
    torch.testing.assert_close(weight[:, :3], source * 0.75)
    torch.testing.assert_close(weight[:, 3], source.mean(1) * 0.75)
    # transform_input re-normalises the three RGB channels only; depth passes unchanged.
    assert model.input_scale.flatten()[3] == 1 and model.input_shift.flatten()[3] == 0
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 4, 33, 45)).shape == (1, 3, 33, 45)


# --- export ------------------------------------------------------------------------------------

def test_onnx_opset17_matches_pytorch_at_odd_sizes():
    """The exporter's path (DeployGraph, opset 17): the pools keep torchvision's rounding up,
    and inputs below the 15×15 minimum are padded in the graph."""
    torch.manual_seed(1)
    model = awaken(create_model("fcn8s", 5, "googlenet")).eval()   # live maps (support.py)
    with torch.no_grad():
        for score in (model.score_fr, model.score_pool4, model.score_pool3):
            score.weight.normal_(0, 0.05)
    onnx_model = trace_to_onnx(DeployGraph(model), opset=17)
    pools = [n for n in onnx_model.graph.node if n.op_type == "MaxPool"]
    assert len(pools) == 4 + 9  # the stem's four and one per Inception module
    ceil = [{a.name: a.i for a in n.attribute}.get("ceil_mode", 0) for n in pools]
    assert sorted(ceil) == [0] * 9 + [1] * 4   # the strided ones round up, as torchvision's
    # onnx.reference (the fp16 export's check in fp16 arithmetic) sizes every map as PyTorch
    # does: with ceil_mode on the stride-1 pools it made them two pixels larger.
    x = torch.randn(1, 3, 37, 45)
    with torch.no_grad():
        expected = model(x).numpy()
    got = ReferenceEvaluator(onnx_model).run(None, {"images": x.numpy()})[0]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-3 * np.abs(expected).max()
    infer = ort_infer(onnx_model)
    for x in (torch.randn(2, 3, 31, 47), torch.randn(1, 3, 1, 1), torch.randn(1, 3, 97, 131)):
        with torch.no_grad():
            ref = model(x).numpy()
        np.testing.assert_allclose(infer(x.numpy()), ref, rtol=0,
                                   atol=1e-4 * np.abs(ref).max())
