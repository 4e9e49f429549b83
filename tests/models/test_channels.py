"""Extra input channels (paper §5, NYUDv2 early fusion): an RGB first layer widened by the rule
in ``fcn_edge.models.channels``, through every way weights are loaded."""
from __future__ import annotations

import pytest
import torch

from fcn_edge.errors import WeightsMismatchError
from fcn_edge.models import create_model, load_model, save_checkpoint
from fcn_edge.models.channels import adapt_first_conv, extend_input_conv
from fcn_edge.models.registry import get_backbone

from support import awaken


def _rgb_and_rgbd(extra: int = 1):
    """A grey RGB image and the same image with ``extra`` channels carrying the grey value."""
    grey = torch.rand(1, 1, 40, 56)
    return grey.expand(-1, 3, -1, -1), grey.expand(-1, 3 + extra, -1, -1)


def test_the_rule_keeps_a_grey_images_response_exactly():
    torch.manual_seed(0)
    weight = torch.randn(8, 3, 3, 3)
    wide = extend_input_conv(weight, 4)
    assert wide.shape == (8, 4, 3, 3)
    torch.testing.assert_close(wide[:, :3], weight * 0.75)
    torch.testing.assert_close(wide[:, 3], weight.mean(dim=1) * 0.75)
    grey = torch.rand(1, 1, 9, 9)
    rgb = torch.nn.functional.conv2d(grey.expand(-1, 3, -1, -1), weight)
    rgbd = torch.nn.functional.conv2d(grey.expand(-1, 4, -1, -1), wide)
    torch.testing.assert_close(rgbd, rgb)
    assert extend_input_conv(weight, 3) is weight
    with pytest.raises(WeightsMismatchError, match="cannot drop"):
        extend_input_conv(weight, 2)


@pytest.mark.parametrize("backbone", ["resnet18", "alexnet", "mobilenet_v3_large",
                                      "mobilenet_v3_small"])
def test_an_rgb_checkpoint_initialises_an_rgbd_fcn(tmp_path, backbone):
    torch.manual_seed(1)
    options = {"fc_channels": 32} if get_backbone(backbone).fc_layers else {}
    rgb = awaken(create_model("fcn32s", num_classes=4, backbone=backbone, **options)).eval()
    with torch.no_grad():
        for name, p in rgb.named_parameters():
            if name.startswith("score"):
                p.normal_(0, 0.05)
    path = save_checkpoint(rgb, tmp_path / "rgb.pt", {})
    rgbd = load_model(path, in_channels=4).eval()
    assert rgbd.config.in_channels == 4
    assert rgbd.load_report.adapted == (get_backbone(backbone).first_conv,)
    assert "widened to more input channels" in rgbd.load_report.summary()
    x3, x4 = _rgb_and_rgbd()
    with torch.no_grad():
        torch.testing.assert_close(rgbd(x4), rgb(x3), rtol=1e-4, atol=1e-5)
        # and depth is seen: another depth value changes the scores (a random-init trunk
        # damps it, so only inequality is asserted)
        other = torch.cat([x3, torch.zeros_like(x3[:, :1])], dim=1)
        assert not torch.equal(rgbd(other), rgb(x3))


def test_staged_and_torchvision_loads_widen_too(tmp_path):
    torch.manual_seed(2)
    coarse = create_model("fcn32s", num_classes=4, backbone="resnet18")
    path = save_checkpoint(coarse, tmp_path / "fcn32s.pt", {})
    fine = create_model("fcn16s", num_classes=4, backbone="resnet18", in_channels=4,
                        weights=path)
    assert fine.load_report.adapted == ("conv1.weight",)
    torch.testing.assert_close(fine.state_dict()["conv1.weight"],
                               extend_input_conv(coarse.state_dict()["conv1.weight"], 4))
    classifier = {k: v for k, v in coarse.state_dict().items() if not k.startswith(("score",
                                                                                   "upscore"))}
    classifier.update({"fc.weight": torch.randn(1000, 512), "fc.bias": torch.zeros(1000)})
    torch.save(classifier, tmp_path / "resnet18_imagenet.pth")
    rgbd = create_model("fcn32s", num_classes=4, backbone="resnet18", in_channels=4,
                        weights=tmp_path / "resnet18_imagenet.pth")
    assert rgbd.load_report.adapted == ("conv1.weight",)


def test_other_mismatches_are_still_reported():
    own = create_model("fcn32s", num_classes=4, backbone="resnet18", in_channels=4).state_dict()
    state = dict(own)
    state["conv1.weight"] = torch.randn(32, 3, 7, 7)  # fewer filters: not a channel widening
    out, adapted = adapt_first_conv(state, "resnet18", own)
    assert not adapted and out["conv1.weight"].shape == (32, 3, 7, 7)
    five = {"conv1.weight": torch.randn(64, 5, 7, 7)}  # more channels than the model: no
    assert adapt_first_conv(five, "resnet18", own)[1] is False


def test_googlenet_keeps_the_rule_in_its_trunks_own_input(tmp_path):
    """GoogLeNet re-normalises its RGB channels (torchvision's ``transform_input``) and passes
    extra ones as they are, so the rule is exact for an image that is grey where the trunk
    sees it: RGB channels whose re-normalised values equal the extra channel's value."""
    torch.manual_seed(3)
    rgb = create_model("fcn32s", num_classes=4, backbone="googlenet").eval()
    with torch.no_grad():
        rgb.score_fr.weight.normal_(0, 0.05)
    path = save_checkpoint(rgb, tmp_path / "rgb.pt", {})
    rgbd = load_model(path, in_channels=4).eval()
    assert rgbd.load_report.adapted == ("conv1.conv.weight",)
    grey = torch.rand(1, 1, 40, 56)
    scale, shift = rgb.input_scale, rgb.input_shift   # 1×3×1×1
    x3 = (grey - shift) / scale                        # re-normalised: grey in every channel
    x4 = torch.cat([x3, grey], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(rgbd(x4), rgb(x3), rtol=1e-4, atol=1e-5)
        assert not torch.equal(rgbd(torch.cat([x3, grey * 0], dim=1)), rgb(x3))
