"""The backbone registry: a backbone is one ``register(BackboneSpec(...))`` plus its module.

A tiny backbone defined here is registered, and config, the CLI, ``fcn-edge models``,
``create_model``, weight detection and loading all know it without another edit; then it is
unregistered and nothing knows it any more.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fcn_edge.cli import build_parser, main
from fcn_edge.config import ModelConfig, TrainConfig
from fcn_edge.errors import InputError
from fcn_edge.models import create_model, load_model, read_weights
from fcn_edge.models.fcn import FCN
from fcn_edge.models.registry import (BackboneSpec, backbone_names, backbones, get_backbone,
                                      register, unregister)

ROOT = Path(__file__).resolve().parents[2]


class _TinyTrunk(nn.Module):
    """Five stride-2 convolutions: maps at strides 8 (conv3), 16 (conv4) and 32 (conv5)."""

    def _build_tiny_trunk(self, in_channels: int) -> None:
        widths = (in_channels, 4, 8, 8, 8, 8)
        for i in range(1, 6):
            setattr(self, f"conv{i}", nn.Conv2d(widths[i - 1], widths[i], 3, 2, padding=1))

    def _tiny_taps(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        taps = {}
        for i in range(1, 6):
            x = torch.relu(getattr(self, f"conv{i}")(x))
            taps[2 ** i] = x
        return {s: taps[s] for s in (8, 16, 32)}


class TinyFCN(FCN, _TinyTrunk):
    def _build_trunk(self) -> dict[int, int]:
        self._build_tiny_trunk(self.config.in_channels)
        return {8: 8, 16: 8, 32: 8}

    def _trunk(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        return self._tiny_taps(x)

    def _tap_layers(self) -> dict[int, list[nn.Module]]:
        convs = [getattr(self, f"conv{i}") for i in range(1, 6)]
        return {8: convs[:3], 16: convs[:4], 32: convs}


class TinyClassifier(_TinyTrunk):
    """Its 'ImageNet classifier': the trunk, global pooling and one Linear layer."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self._build_tiny_trunk(3)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self._tiny_taps(x)[32].mean(dim=(2, 3)))


TINY = BackboneSpec(
    name="tiny", fcn=TinyFCN, classifier=TinyClassifier,
    taps=((8, "conv3"), (16, "conv4"), (32, "conv5")), first_conv="conv1.weight",
    default_lr=0.125, fc_layers=False, torchvision_fc={"fc": "score_fr"},
    torchvision_signs=("conv5.weight", "fc.weight"), fcn_sign="conv5.weight")


@pytest.fixture
def tiny():
    register(TINY)
    try:
        yield TINY
    finally:
        unregister("tiny")


def test_a_registered_backbone_is_valid_in_config_and_cli(tiny):
    assert backbone_names()[-1] == "tiny"
    assert ModelConfig(backbone="tiny").backbone == "tiny"
    assert TrainConfig(model=ModelConfig(backbone="tiny")).effective_lr == 0.125
    with pytest.raises(InputError, match="layout 'reference' exists only for vgg16"):
        ModelConfig(backbone="tiny", layout="reference")
    with pytest.raises(InputError, match="which tiny does not have"):
        ModelConfig(backbone="tiny", fc_channels=16)
    args = build_parser().parse_args(["train", "--backbone", "tiny"])
    assert args.backbone == "tiny"


def test_fcn_edge_models_lists_a_registered_backbone(tiny, capsys):
    assert main(["models", "--json", "--size", "64x64", "--num-classes", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    mine = {(r["name"], r["layout"]) for r in rows if r["backbone"] == "tiny"}
    assert mine == {("fcn32s", "edge"), ("fcn16s", "edge"), ("fcn8s", "edge")}
    # Each registered backbone's three variants in each of its layouts (these 3 included),
    # and the 4 published architectures.
    assert len(rows) == 3 * sum(len(b.layouts) for b in backbones()) + 4


def test_a_registered_backbone_builds_saves_and_loads(tiny, tmp_path):
    torch.manual_seed(0)
    model = create_model("fcn8s", num_classes=3, backbone="tiny").eval()
    assert isinstance(model, TinyFCN)
    x = torch.rand(1, 3, 37, 50)
    assert model(x).shape == (1, 3, 37, 50)
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    found = read_weights(tmp_path / "tiny.pt")  # detected by its fcn_sign
    assert (found.kind, found.backbone, found.variant) == ("fcn", "tiny", "fcn8s")
    again = load_model(tmp_path / "tiny.pt").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))


def test_a_registered_backbones_classifier_initialises_its_fcn(tiny, tmp_path):
    torch.manual_seed(1)
    classifier = TinyClassifier(num_classes=3)
    torch.save(classifier.state_dict(), tmp_path / "imagenet.pt")
    assert read_weights(tmp_path / "imagenet.pt").kind == "torchvision"
    # As many classes as the classifier: its fc becomes score_fr (paper Figure 2).
    fcn = create_model("fcn32s", num_classes=3, backbone="tiny",
                       weights=tmp_path / "imagenet.pt")
    torch.testing.assert_close(fcn.score_fr.weight[..., 0, 0], classifier.fc.weight)
    torch.testing.assert_close(fcn.conv5.weight, classifier.conv5.weight)
    # Four input channels: the first conv named by the record is widened.
    rgbd = create_model("fcn32s", num_classes=3, backbone="tiny", in_channels=4,
                        weights=tmp_path / "imagenet.pt")
    assert rgbd.load_report.adapted == ("conv1.weight",)


def test_unregistered_backbones_are_unknown_again(tiny):
    unregister("tiny")
    try:
        with pytest.raises(InputError, match="unknown backbone 'tiny'; choose one of vgg16"):
            ModelConfig(backbone="tiny")
        with pytest.raises(SystemExit):
            build_parser().parse_args(["train", "--backbone", "tiny"])
    finally:
        register(TINY)  # for the fixture's unregister


def test_a_record_is_checked_when_it_is_made():
    with pytest.raises(InputError, match="strides"):
        BackboneSpec(name="bad", fcn=TinyFCN, taps=((8, "a"), (32, "b")), first_conv="w",
                     default_lr=0.1, torchvision_fc={}, torchvision_signs=(), fcn_sign="x")
    with pytest.raises(InputError, match="layouts"):
        BackboneSpec(name="bad", fcn=TinyFCN, taps=TINY.taps, first_conv="w", default_lr=0.1,
                     torchvision_fc={}, torchvision_signs=(), fcn_sign="x", layouts=("caffe",))
    with pytest.raises(InputError, match="already registered"):
        register(get_backbone("vgg16"))


@pytest.mark.parametrize("spec", backbones(), ids=lambda s: s.name)
def test_each_records_taps_and_first_conv_are_layers_of_its_fcn(spec):
    options = {"fc_channels": 16} if spec.fc_layers else {}
    model = create_model("fcn8s", num_classes=3, backbone=spec.name, **options).eval()
    assert spec.first_conv in model.state_dict() and spec.fcn_sign in model.state_dict()
    seen = {}
    hooks = [model.get_submodule(name).register_forward_hook(
        lambda m, i, out, stride=stride: seen.__setitem__(stride, out.shape))
        for stride, name in spec.taps]
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        taps = model.taps(x)
    for hook in hooks:
        hook.remove()
    assert seen == {stride: taps[stride].shape for stride in (8, 16, 32)}


def test_the_registry_config_and_cli_parser_import_without_torch():
    code = ("import sys\nfrom fcn_edge.cli import build_parser\n"
            "import fcn_edge.config, fcn_edge.models.registry as r\n"
            "parser = build_parser()\n"
            "print(r.backbone_names(), 'torch' in sys.modules, 'fcn_edge.data' in sys.modules)\n"
            "parser.parse_args(['train', '--data-layout', 'voc'])\n"
            "print('fcn_edge.data' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    # The data package loads only when --data-layout's choices are needed (and it can: a
    # given --data-layout does load it); torch never.
    assert out == [f"{backbone_names()} False False", "True False"]
    assert backbone_names()[:3] == ("vgg16", "alexnet", "resnet18")
