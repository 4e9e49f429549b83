import json

import pytest

from fcn_edge.config import ModelConfig
from fcn_edge.errors import InputError


def test_defaults_are_the_papers_best_net():
    cfg = ModelConfig()
    assert (cfg.name, cfg.backbone, cfg.layout, cfg.num_classes) == ("fcn8s", "vgg16", "edge", 21)
    assert (cfg.fc_channels, cfg.dropout, cfg.learnable_upsampling) == (4096, 0.5, False)


@pytest.mark.parametrize("name,stride", [("fcn32s", 32), ("fcn16s", 16), ("fcn8s", 8)])
def test_output_stride(name, stride):
    assert ModelConfig(name=name).output_stride == stride


def test_json_round_trip():
    cfg = ModelConfig(name="fcn16s", num_classes=5, backbone="resnet18", dropout=0.1)
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_frozen():
    with pytest.raises(AttributeError):
        ModelConfig().num_classes = 3


@pytest.mark.parametrize("kwargs,words", [
    ({"name": "fcn4s"}, ["fcn4s", "fcn32s, fcn16s, fcn8s"]),
    ({"backbone": "vgg19"}, ["vgg19", "resnet18"]),
    ({"layout": "caffe"}, ["caffe", "edge, reference"]),
    ({"backbone": "resnet18", "layout": "reference"}, ["only for vgg16", "layout='edge'"]),
    ({"num_classes": 0}, ["num_classes", "an integer from 1 to 10000", "got 0"]),
    ({"num_classes": 2.5}, ["num_classes", "2.5"]),
    ({"fc_channels": -1}, ["fc_channels"]),
    ({"dropout": 1.0}, ["dropout", "from 0 to below 1"]),
    ({"dropout": float("nan")}, ["dropout", "from 0 to below 1", "nan"]),
])
def test_bad_values_say_what_is_wrong(kwargs, words):
    with pytest.raises(InputError) as info:
        ModelConfig(**kwargs)
    assert isinstance(info.value, ValueError)
    for word in words:
        assert word in str(info.value)


def test_unknown_keys_are_an_error():
    with pytest.raises(InputError, match="unknown model config keys \\['colour'\\]"):
        ModelConfig.from_dict({"name": "fcn8s", "colour": "red"})


def test_fc_channels_is_refused_for_resnet18_which_has_no_fc_layers():
    with pytest.raises(InputError, match="resnet18 does not have"):
        ModelConfig(backbone="resnet18", fc_channels=16)
    assert ModelConfig(backbone="resnet18").fc_channels == 4096  # the default is accepted
