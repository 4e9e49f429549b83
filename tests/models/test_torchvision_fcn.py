"""torchvision's fcn_resnet50/101 written here: published parameter counts, torchvision's exact
keys and shapes (strict loads), output stride 8 with dilation where torchvision puts it, the
bilinear upsampling to the input, the aux head only when asked, deterministic eval numerics.

The expected layout is generated in this file from torchvision's rules (resnet.py's
``_make_layer`` and ``Bottleneck``, segmentation/fcn.py's ``FCNHead``), independently of the
model code, so a wrong key, shape or block count fails here.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fcn_edge.errors import ModelFormatError
from fcn_edge.models import count_parameters
from fcn_edge.models.torchvision_fcn import (
    ARCHITECTURES, TorchvisionFCN, fcn_resnet50, from_state_dict)
from fcn_edge.models.zoo import get as zoo_entry

pytestmark = pytest.mark.usefixtures("one_thread")

#: torchvision's FCN_ResNet50_Weights / FCN_ResNet101_Weights ``num_params`` (21 classes, aux).
TORCHVISION_NUM_PARAMS = {"fcn_resnet50": 35_322_218, "fcn_resnet101": 54_314_346}


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def _head(prefix: str, c_in: int, classes: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.0.weight": (c_in // 4, c_in, 3, 3), **_bn(f"{prefix}.1", c_in // 4),
            f"{prefix}.4.weight": (classes, c_in // 4, 1, 1), f"{prefix}.4.bias": (classes,)}


def torchvision_layout(blocks, classes: int = 21, aux: bool = True) -> dict[str, tuple]:
    """Key → shape of a torchvision FCN state dict, from torchvision's construction rules."""
    keys = {"backbone.conv1.weight": (64, 3, 7, 7), **_bn("backbone.bn1", 64)}
    c_in = 64
    for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        for b in range(n):
            p = f"backbone.layer{stage}.{b}"
            keys[f"{p}.conv1.weight"] = (planes, c_in, 1, 1)
            keys.update(_bn(f"{p}.bn1", planes))
            keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            keys.update(_bn(f"{p}.bn2", planes))
            keys[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            keys.update(_bn(f"{p}.bn3", planes * 4))
            if b == 0:  # every first block projects (channels change, or stride 2)
                keys[f"{p}.downsample.0.weight"] = (planes * 4, c_in, 1, 1)
                keys.update(_bn(f"{p}.downsample.1", planes * 4))
            c_in = planes * 4
    keys.update(_head("classifier", 2048, classes))
    if aux:
        keys.update(_head("aux_classifier", 1024, classes))
    return keys


def random_state(layout: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with exactly ``layout``'s keys and shapes and plausible values."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith("bias") or key.endswith("running_mean"):
            state[key] = torch.randn(shape, generator=gen) * 0.1
        elif len(shape) == 1:  # a BN weight
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=gen) * (2 / fan_in) ** 0.5
    return state


@pytest.fixture(scope="module")
def resnet50_model():
    return fcn_resnet50().eval()


@pytest.mark.parametrize("arch", sorted(TORCHVISION_NUM_PARAMS))
def test_parameter_count_is_torchvisions_published_number(arch):
    model = TorchvisionFCN(arch)
    assert count_parameters(model) == TORCHVISION_NUM_PARAMS[arch] == \
        zoo_entry(f"torchvision/{arch}").num_params  # the zoo holds the published count once


@pytest.mark.parametrize("arch", sorted(TORCHVISION_NUM_PARAMS))
@pytest.mark.parametrize("aux", [True, False])
def test_keys_and_shapes_are_torchvisions(arch, aux):
    layout = torchvision_layout(ARCHITECTURES[arch].blocks, classes=21, aux=aux)
    own = TorchvisionFCN(arch, aux=aux).state_dict()
    assert list(own) == list(layout)  # same keys, same order
    assert {k: tuple(v.shape) for k, v in own.items()} == layout
    assert not any(k.startswith("backbone.fc") or "avgpool" in k for k in own)


def test_generated_torchvision_state_dict_loads_strict_and_is_used():
    layout = torchvision_layout(ARCHITECTURES["fcn_resnet50"].blocks, classes=5)
    state = random_state(layout)
    model = from_state_dict(state).eval()
    assert (model.arch, model.num_classes, model.aux_classifier is not None) == \
        ("fcn_resnet50", 5, True)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in layout)
    fresh = TorchvisionFCN("fcn_resnet50", 5)
    fresh.load_state_dict(state, strict=True)


def test_resnet101_layout_is_recognised_without_aux():
    state = random_state(torchvision_layout(ARCHITECTURES["fcn_resnet101"].blocks, aux=False))
    model = from_state_dict(state)
    assert (model.arch, model.num_classes, model.aux_classifier) == ("fcn_resnet101", 21, None)


def test_a_state_dict_that_does_not_fit_is_one_clear_error():
    state = random_state(torchvision_layout(ARCHITECTURES["fcn_resnet50"].blocks))
    state["classifier.0.weight"] = torch.zeros(256, 2048, 3, 3)
    del state["backbone.layer1.0.bn1.bias"]
    with pytest.raises(ModelFormatError, match="fcn_resnet50 state dict does not fit: "
                       r"missing \['backbone.layer1.0.bn1.bias'\].*classifier.0.weight"):
        from_state_dict(state)
    with pytest.raises(ModelFormatError, match="not a torchvision FCN state dict"):
        from_state_dict({"conv1_1.weight": torch.zeros(64, 3, 3, 3)})


def test_dilation_and_stride_sit_where_torchvision_puts_them(resnet50_model):
    # replace_stride_with_dilation=[False, True, True]: layer2 strides; layer3's first block
    # keeps dilation 1 and its others use 2; layer4's first block 2, its others 4.
    bb = resnet50_model.backbone
    assert bb.layer2[0].conv2.stride == (2, 2) and bb.layer2[0].downsample[0].stride == (2, 2)
    for stage, first, rest in ((bb.layer3, 1, 2), (bb.layer4, 2, 4)):
        assert stage[0].conv2.stride == (1, 1) and stage[0].downsample[0].stride == (1, 1)
        assert stage[0].conv2.dilation == (first, first) and stage[0].conv2.padding == (first,) * 2
        assert {b.conv2.dilation for b in stage[1:]} == {(rest, rest)}
        assert {b.conv2.padding for b in stage[1:]} == {(rest, rest)}
    assert all(b.conv1.stride == (1, 1) for s in (bb.layer2, bb.layer3) for b in s)


@pytest.mark.parametrize("size", [(64, 96), (70, 50)])
def test_output_stride_8_and_output_at_the_input_size(resnet50_model, size):
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        x3, x4 = resnet50_model.backbone(x)
        out = resnet50_model(x)
    cells = tuple(-(-n // 8) for n in size)  # ⌈n/8⌉
    assert tuple(x3.shape[-2:]) == cells and tuple(x4.shape[-2:]) == cells
    assert x4.shape[1] == 2048 and x3.shape[1] == 1024
    assert tuple(out.shape) == (1, 21, *size)


def test_output_is_the_bilinearly_upsampled_classifier(resnet50_model):
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        coarse = resnet50_model.classifier(resnet50_model.backbone(x)[1])
        expected = F.interpolate(coarse, size=(48, 40), mode="bilinear", align_corners=False)
        assert torch.equal(resnet50_model(x), expected)


def test_aux_output_only_when_asked(resnet50_model):
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        plain = resnet50_model(x)
        both = resnet50_model(x, aux=True)
    assert isinstance(plain, torch.Tensor) and set(both) == {"out", "aux"}
    assert torch.equal(both["out"], plain) and both["aux"].shape == plain.shape
    assert not torch.equal(both["aux"], plain)
    with pytest.raises(ModelFormatError, match="without its aux head"):
        TorchvisionFCN("fcn_resnet50", aux=False)(x, aux=True)


def test_eval_numerics_are_deterministic_and_dropout_is_off():
    state = random_state(torchvision_layout(ARCHITECTURES["fcn_resnet50"].blocks), seed=3)
    a, b = from_state_dict(state).eval(), from_state_dict(state).eval()
    x = torch.randn(2, 3, 33, 47, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        first, again, other = a(x), a(x), b(x)
    assert torch.equal(first, again) and torch.equal(first, other)
    assert first.abs().max() > 0 and torch.isfinite(first).all()


def test_load_model_rebuilds_a_torchvision_fcn_file_with_its_config(tmp_path):
    from fcn_edge.models import load_model

    state = random_state(torchvision_layout(ARCHITECTURES["fcn_resnet50"].blocks, classes=4))
    path = tmp_path / "fcn_resnet50_coco.pth"
    torch.save(state, path)
    model = load_model(path).eval()
    assert (model.config.name, model.config.backbone, model.config.num_classes,
            model.config.aux, model.config.output_stride) == ("fcn_resnet50", "resnet50", 4,
                                                              True, 8)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(model(x), from_state_dict(state).eval()(x))
