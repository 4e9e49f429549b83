"""Multi-task heads (paper §5, SIFT Flow): one trunk, one head per task, the trunk run once."""
from __future__ import annotations

import onnxruntime as ort
import pytest
import torch

from fcn_edge.errors import InputError
from fcn_edge.models import MultiHeadFCN, create_model

from support import awaken

HEADS = {"semantic": 6, "geometric": 3}


@pytest.fixture(scope="module")
def two_heads():
    torch.manual_seed(0)
    model = create_model("fcn16s", backbone="resnet18", heads=HEADS)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "score" in key:
                p.normal_(0, 0.05)
    return model.eval()


def test_one_score_map_per_task_at_the_input_size(two_heads):
    x = torch.rand(2, 3, 45, 61)
    with torch.no_grad():
        out = two_heads(x)
    assert list(out) == ["semantic", "geometric"]
    assert out["semantic"].shape == (2, 6, 45, 61) and out["geometric"].shape == (2, 3, 45, 61)
    assert isinstance(two_heads, MultiHeadFCN) and two_heads.config.name == "fcn16s"


def _geometric_head_alone(model, name: str, backbone: str):
    """A single-task FCN with ``model``'s trunk and its geometric head's layers."""
    single = create_model(name, num_classes=3, backbone=backbone).eval()
    state = {k[len("fcn."):]: v for k, v in model.state_dict().items()
             if k.startswith("fcn.") and not k.startswith(("fcn.score", "fcn.upscore"))}
    state.update({k.split(".", 2)[2]: v for k, v in model.state_dict().items()
                  if k.startswith("extra_heads.geometric.")})
    single.load_state_dict(state)
    return single


def test_each_head_equals_a_single_task_fcn_with_the_same_trunk_and_head(two_heads):
    """The geometric head is exactly an FCN-16s with that head's layers on the shared trunk."""
    single = _geometric_head_alone(two_heads, "fcn16s", "resnet18")
    x = torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(two_heads(x)["geometric"], single(x))


def test_the_heads_share_the_trunk_and_nothing_else(two_heads):
    keys = two_heads.state_dict().keys()
    assert sum(k.startswith("fcn.layer4") for k in keys) > 0
    assert not any(k.startswith("extra_heads.geometric.layer") for k in keys)
    head = {k for k in keys if k.startswith("extra_heads.geometric.")}
    assert {k.split(".")[2] for k in head} == {"score_fr", "score_pool4", "upscore2",
                                               "upscore16"}
    trunk = sum(p.numel() for k, p in two_heads.named_parameters() if "score" not in k)
    single = sum(p.numel() for k, p in create_model("fcn16s", num_classes=6,
                 backbone="resnet18").named_parameters() if "score" not in k)
    assert trunk == single  # one trunk, not two


def test_bad_heads_are_refused():
    with pytest.raises(InputError, match="at least two distinctly named heads"):
        create_model("fcn16s", backbone="resnet18", heads={"semantic": 33})
    with pytest.raises(InputError, match="class counts"):
        create_model("fcn16s", backbone="resnet18", heads={"semantic": 33, "geometric": 0})
    with pytest.raises(InputError, match="identifiers"):
        create_model("fcn16s", backbone="resnet18", heads={"a b": 3, "c": 2})


def test_exports_to_one_onnx_graph_with_an_output_per_task(two_heads, tmp_path):
    path = tmp_path / "two_heads.onnx"
    torch.onnx.export(two_heads, torch.rand(1, 3, 64, 64), str(path), input_names=["images"],
                      output_names=list(HEADS), opset_version=17, dynamo=False,
                      dynamic_axes={n: {0: "n", 2: "h", 3: "w"} for n in ["images", *HEADS]})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(HEADS)
    x = torch.rand(1, 3, 70, 90)
    with torch.no_grad():
        expected = two_heads(x)
    for name, got in zip(HEADS, session.run(None, {"images": x.numpy()})):
        want = expected[name].numpy()
        assert got.shape == want.shape
        assert abs(got - want).max() <= 1e-4 * max(1.0, abs(want).max())


def test_an_imagenet_classifier_initialises_the_shared_trunk(tmp_path):
    torch.manual_seed(3)
    donor = create_model("fcn32s", num_classes=4, backbone="resnet18")
    classifier = {k: v for k, v in donor.state_dict().items()
                  if not k.startswith(("score", "upscore"))}
    classifier.update({"fc.weight": torch.randn(1000, 512), "fc.bias": torch.zeros(1000)})
    torch.save(classifier, tmp_path / "resnet18_imagenet.pth")
    model = create_model("fcn16s", backbone="resnet18", heads=HEADS,
                         weights=tmp_path / "resnet18_imagenet.pth")
    assert "torchvision" in model.load_report.summary()
    torch.testing.assert_close(model.state_dict()["fcn.conv1.weight"], classifier["conv1.weight"])
    assert model.state_dict()["extra_heads.geometric.score_fr.weight"].abs().sum() == 0  # §4.2


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_round_trip_rebuilds_the_heads(two_heads, tmp_path, suffix):
    from fcn_edge.models import load_model, save_checkpoint

    path = save_checkpoint(two_heads, tmp_path / f"two{suffix}", {"classes": ["a"] * 6})
    again = load_model(path).eval()
    assert isinstance(again, MultiHeadFCN) and again.heads == HEADS
    assert again.config.heads == (("semantic", 6), ("geometric", 3))
    assert again.config.num_classes == 6
    x = torch.rand(1, 3, 50, 70)
    with torch.no_grad():
        for task in HEADS:
            torch.testing.assert_close(again(x)[task], two_heads(x)[task])


def test_heads_live_in_the_model_config():
    from fcn_edge.config import ModelConfig

    config = ModelConfig(name="fcn16s", backbone="resnet18", heads=[["semantic", 33],
                                                                     ["geometric", 3]])
    assert config.heads == (("semantic", 33), ("geometric", 3)) and config.num_classes == 33
    assert ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("backbone", ["mobilenet_v3_large", "mobilenet_v3_small", "googlenet"])
def test_the_edge_backbones_carry_several_heads(backbone):
    """Every registered trunk takes heads the same way: one trunk, each head exactly the
    single-task FCN on it (the trunks' BatchNorm statistics drawn from procedural scenes, so
    that the maps are alive in eval mode: ``support.awaken``)."""
    torch.manual_seed(0)
    model = awaken(create_model("fcn8s", backbone=backbone, heads=HEADS))
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "score" in key:
                p.normal_(0, 0.05)
    model.eval()
    single = _geometric_head_alone(model, "fcn8s", backbone)
    x = torch.rand(1, 3, 45, 61)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out["geometric"], single(x))
    assert out["semantic"].shape == (1, 6, 45, 61)
    assert out["geometric"].argmax(1).unique().numel() > 1   # labels vary: a live trunk
