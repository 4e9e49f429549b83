"""jetson-inference's FCN-ResNet18/34 (dusty-nv/pytorch-segmentation on its torchvision fork):
the exact keys and shapes, stride 32 without dilation, the coarse grid its ONNX export returns,
and its trainer's checkpoint dict (with the argparse Namespace it pickles) loaded through
``load_model`` with the classes of the data set it names.

The expected layout is generated here from the fork's rules (torchvision's ``BasicBlock`` and
``_make_layer``; ``_segm_resnet`` with ``replace_stride_with_dilation=[False, False, False]``,
FCNHead(2048/4) and aux FCNHead(1024/4)), independently of the model code.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # beside test_torchvision_fcn

from fcn_edge.errors import ModelFormatError  # noqa: E402
from fcn_edge.models import count_parameters, load_model  # noqa: E402
from fcn_edge.models.pretrained_data import (CITYSCAPES_21, DEEPSCENE,  # noqa: E402
                                             DEEPSCENE_COLORS)
from fcn_edge.models.torchvision_fcn import (TorchvisionFCN, fcn_resnet18,  # noqa: E402
                                             from_state_dict)
from test_torchvision_fcn import _bn, _head, random_state  # noqa: E402  torchvision's rules

pytestmark = pytest.mark.usefixtures("one_thread")

BLOCKS = {"fcn_resnet18": (2, 2, 2, 2), "fcn_resnet34": (3, 4, 6, 3)}


def jetson_layout(blocks, classes: int = 21, aux: bool = False) -> dict[str, tuple]:
    """Key → shape of a pytorch-segmentation fcn_resnet18/34 state dict."""
    keys = {"backbone.conv1.weight": (64, 3, 7, 7), **_bn("backbone.bn1", 64)}
    c_in = 64
    for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        for b in range(n):
            p = f"backbone.layer{stage}.{b}"
            keys[f"{p}.conv1.weight"] = (planes, c_in, 3, 3)
            keys.update(_bn(f"{p}.bn1", planes))
            keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            keys.update(_bn(f"{p}.bn2", planes))
            if b == 0 and stage > 1:  # stride 2 and more channels: a projection
                keys[f"{p}.downsample.0.weight"] = (planes, c_in, 1, 1)
                keys.update(_bn(f"{p}.downsample.1", planes))
            c_in = planes
    keys.update(_head("classifier", 512, classes))
    if aux:
        keys.update(_head("aux_classifier", 256, classes))
    return keys


def trainer_checkpoint(path, state, *, arch="fcn_resnet18", dataset="cityscapes", classes=21):
    """The dict pytorch-segmentation's train.py saves (model_best.pth), Namespace and all."""
    args = argparse.Namespace(arch=arch, dataset=dataset, lr=0.01, resolution=320, width=512,
                              height=256, aux_loss=False, model_dir="./models", workers=8)
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 0.01}]},
                "epoch": 29, "args": args, "arch": arch, "dataset": dataset,
                "num_classes": classes, "resolution": (256, 512), "accuracy": 91.25,
                "mean_IoU": 63.5}, path)
    return path


@pytest.mark.parametrize("arch", sorted(BLOCKS))
@pytest.mark.parametrize("aux", [True, False])
def test_keys_and_shapes_are_the_forks(arch, aux):
    own = TorchvisionFCN(arch, num_classes=21, aux=aux).state_dict()
    layout = jetson_layout(BLOCKS[arch], 21, aux)
    assert list(own) == list(layout)
    assert {k: tuple(v.shape) for k, v in own.items()} == layout


def test_stride_32_without_dilation_and_the_coarse_grid_upsampled():
    model = fcn_resnet18(num_classes=5).eval()
    assert all(m.dilation == (1, 1) for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.randn(1, 3, 256, 512)
    with torch.no_grad():
        coarse = model.scores(x)
        out = model(x)
    assert tuple(coarse.shape) == (1, 5, 8, 16)  # what segNet's output_0 holds at 512x256
    expected = F.interpolate(coarse, size=(256, 512), mode="bilinear", align_corners=False)
    assert torch.equal(out, expected)
    assert model.backbone.layer4[0].conv1.stride == (2, 2)


def test_parameter_count_follows_from_the_layout():
    layout = jetson_layout(BLOCKS["fcn_resnet18"], 21, aux=True)
    from_layout = sum(int(torch.Size(s).numel()) for k, s in layout.items()
                    if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert count_parameters(fcn_resnet18(21)) == from_layout


def test_bare_state_dict_loads_strict():
    state = random_state(jetson_layout(BLOCKS["fcn_resnet34"], 3))
    model = from_state_dict(state)
    assert (model.arch, model.num_classes, model.aux_classifier) == ("fcn_resnet34", 3, None)


def test_trainer_checkpoint_loads_with_its_data_sets_classes(tmp_path):
    state = random_state(jetson_layout(BLOCKS["fcn_resnet18"], 21))
    path = trainer_checkpoint(tmp_path / "model_best.pth", state)
    model = load_model(path).eval()
    assert (model.config.name, model.config.num_classes, model.config.output_stride,
            model.config.aux) == ("fcn_resnet18", 21, 32, False)
    assert model.meta.classes == CITYSCAPES_21
    assert (model.meta.mean, model.meta.std, model.meta.color_order) == \
        ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "rgb")
    assert model.meta.dataset.image_size == (256, 512)
    assert model.meta.metrics == pytest.approx({"mean_iou": 0.635, "pixel_accuracy": 0.9125})
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_deepscene_gets_its_own_colours_and_unknown_sets_stay_unnamed(tmp_path):
    state = random_state(jetson_layout(BLOCKS["fcn_resnet18"], 5))
    deep = load_model(trainer_checkpoint(tmp_path / "d.pth", state, dataset="deepscene",
                                         classes=5))
    assert deep.meta.classes == DEEPSCENE and deep.meta.palette == DEEPSCENE_COLORS
    nyu = load_model(trainer_checkpoint(tmp_path / "n.pth", state, dataset="nyu", classes=5))
    assert nyu.meta.classes == ()  # the exporter names them class_0 …


def test_inconsistent_or_foreign_files_are_one_clear_error(tmp_path):
    state = random_state(jetson_layout(BLOCKS["fcn_resnet18"], 21))
    liar = trainer_checkpoint(tmp_path / "liar.pth", state, arch="fcn_resnet34")
    with pytest.raises(ModelFormatError, match="arch is 'fcn_resnet34' but its weights are a "
                                               "fcn_resnet18"):
        load_model(liar)
    odd = dict(state)
    odd["backbone.layer3.2.conv1.weight"] = torch.zeros(256, 256, 3, 3)
    torch.save(odd, tmp_path / "odd.pth")
    with pytest.raises(ModelFormatError, match="odd.pth: a torchvision-layout FCN with 3 "
                                               "BasicBlock layer3 blocks; expected"):
        load_model(tmp_path / "odd.pth")


def test_a_pickled_object_beside_the_weights_is_still_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    state = random_state(jetson_layout(BLOCKS["fcn_resnet18"], 21))
    path = tmp_path / "evil.pth"
    torch.save({"model": state, "arch": "fcn_resnet18", "args": Evil()}, path)
    with pytest.raises(ModelFormatError, match="pickled Python objects that fcn-edge will not "
                                               "execute"):
        load_model(path)


def test_a_published_model_does_not_initialise_a_skip_net(tmp_path):
    from fcn_edge.models import create_model

    state = random_state(jetson_layout(BLOCKS["fcn_resnet18"], 21))
    path = trainer_checkpoint(tmp_path / "model_best.pth", state)
    with pytest.raises(ModelFormatError, match="holds fcn_resnet18 weights and cannot initialise "
                                               "a fcn8s: deploy the file as it is"):
        create_model("fcn8s", backbone="resnet18", weights=path)


def test_only_its_own_two_heads_may_be_set_on_a_published_architecture():
    from fcn_edge.config import ModelConfig
    from fcn_edge.errors import InputError

    both = ModelConfig(name="fcn_resnet18", num_classes=5, aux=True,
                       heads=(("out", 5), ("aux", 5)))
    assert both.heads == (("out", 5), ("aux", 5)) and both.num_classes == 5
    for heads, aux in (((("out", 5), ("aux", 5)), False), ((("a", 5), ("b", 5)), True)):
        with pytest.raises(InputError, match="heads cannot be set on it"):
            ModelConfig(name="fcn_resnet18", num_classes=5, aux=aux, heads=heads)
