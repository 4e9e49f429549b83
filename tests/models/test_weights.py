"""Weights files: our checkpoints, safe reading, format detection, ImageNet and staged
initialisation (paper §4.1, §4.2), mismatch reports and ``create_model``'s argument checks.

Most models here are FCN-AlexNet / FCN-VGG16 with ``fc_channels=16`` (fc6/fc7 narrowed) or
ResNet18, so that files stay in the tens of megabytes. A classifier's Linear(in·k·k, width)
reshapes only into a ``width``-channel convolution, so the ImageNet-initialisation tests use:
the project's full-width AlexNet (real torchvision shapes, 4096-wide fc6/fc7; built once, in a
module-scoped fixture), and the project's VGG16 with its three Linear layers narrowed to 16
(a full-width VGG16 classifier file is 0.5 GB and took ~10 s to build, save and load here; the
fc → conv reshape under test is the same for any width).
"""
from __future__ import annotations

import copy
import os
import pickle

import numpy as np
import pytest
import torch

from fcn_edge.errors import InputError, ModelFormatError, WeightsMismatchError
from fcn_edge.models import (
    AlexNet, ResNet18, VGG16, create_model, load_model, read_weights, save_checkpoint,
)

META = {
    "class_names": ["background", "aeroplane", "bicycle", "bird"],
    "palette": [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]],
    "mean": [0.485, 0.456, 0.406],
}
SUFFIXES = (".pt", ".safetensors")


# --- helpers ----------------------------------------------------------------------------------
def small(name="fcn8s", backbone="alexnet", num_classes=3, **options):
    if backbone != "resnet18":
        options.setdefault("fc_channels", 16)
    return create_model(name, num_classes, backbone, **options)


def randomise(model, seed=0, upscore=False):
    """Non-zero random weights everywhere (score layers included), He-scaled so activations
    neither vanish nor explode; random BatchNorm statistics; optionally perturbed upsampling."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("upscore"):
                if upscore:
                    p.mul_(0.5 + torch.rand(p.shape, generator=gen))
            elif p.ndim == 4:  # convolutions
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / p[0].numel()) ** 0.5)
            elif p.ndim == 2:  # Linear
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / p.shape[1]) ** 0.5)
            elif name.endswith("weight"):  # BatchNorm scale
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
            elif name.endswith("num_batches_tracked"):
                b.fill_(7)
    return model.eval()


def forward(model, x):
    with torch.no_grad():
        return model.eval()(x)


def image(h=48, w=72, channels=3, seed=1):
    return torch.randn(1, channels, h, w, generator=torch.Generator().manual_seed(seed))


def bilinear(size):
    """The bilinear upsampling filter of the released nets' surgery.upsample_filt."""
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    k = (1 - abs(og[0] - centre) / factor) * (1 - abs(og[1] - centre) / factor)
    return torch.from_numpy(k.astype(np.float32))


def is_bilinear(weight):
    k = weight.shape[-1]
    return bool(torch.equal(weight, bilinear(k).expand_as(weight)))


def assert_same_state(a, b, keys=None):
    sa, sb = a.state_dict(), b.state_dict()
    for key in keys if keys is not None else sa:
        assert torch.equal(sa[key], sb[key]), key


def one_line(exc):
    return "\n" not in str(exc)


# --- our checkpoints ---------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_checkpoint_round_trip(tmp_path, suffix):
    model = randomise(create_model("fcn8s", 4, "resnet18", learnable_upsampling=True,
                                   dropout=0.25, in_channels=4), upscore=True)
    path = save_checkpoint(model, tmp_path / f"model{suffix}", meta=META)
    assert path == tmp_path / f"model{suffix}" and path.is_file()

    loaded = load_model(path)
    assert loaded.config == model.config
    assert_same_state(model, loaded)
    assert loaded.upscore8.weight.requires_grad  # learnable_upsampling came back too
    assert loaded.load_report.initialised == ()
    x = image(channels=4)
    expected = forward(model, x)
    assert float(expected.abs().max()) > 0.1  # not a trivially zero output
    assert torch.equal(forward(loaded, x), expected)

    info = read_weights(path)
    assert info.kind == "checkpoint" and info.backbone == "resnet18" and info.variant == "fcn8s"
    assert info.checkpoint["meta"] == META
    assert info.checkpoint["model_config"] == model.config.to_dict()

    rebuilt = create_model("fcn8s", 4, "resnet18", learnable_upsampling=True, dropout=0.25,
                           in_channels=4, weights=path)
    assert torch.equal(forward(rebuilt, x), expected)
    assert len(rebuilt.load_report.loaded) == len(model.state_dict())


def test_pt_checkpoint_loads_with_weights_only(tmp_path):
    model = randomise(small("fcn16s"))
    optimizer = {"state": {0: {"momentum_buffer": torch.ones(3)}},  # an SGD state_dict()
                 "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0]}]}
    path = save_checkpoint(model, tmp_path / "model.pt", meta=META, epoch=7,
                           optimizer=optimizer)
    data = torch.load(path, map_location="cpu", weights_only=True)
    assert data["format"] == "fcn-edge/checkpoint"
    assert data["model_config"] == model.config.to_dict()
    assert data["meta"] == META
    assert data["epoch"] == 7
    assert data["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert set(data["state_dict"]) == set(model.state_dict())
    assert torch.equal(data["state_dict"]["score_fr.weight"], model.score_fr.weight)


def test_safetensors_checkpoint_refuses_extra_entries(tmp_path):
    model = small("fcn32s")
    with pytest.raises(ValueError, match="epoch"):
        save_checkpoint(model, tmp_path / "model.safetensors", epoch=3)
    assert os.listdir(tmp_path) == []


# --- atomic writes -----------------------------------------------------------------------------
def _crashing_writer(*args, **kwargs):
    """Write part of a file where the real writer would, then fail like a full disk."""
    target = args[1]
    with open(target, "wb") as f:
        f.write(b"PK\x03\x04 half a checkpoint")
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch, suffix):
    import safetensors.torch

    path = tmp_path / f"model{suffix}"
    save_checkpoint(randomise(small("fcn32s"), seed=1), path, meta=META)
    before = path.read_bytes()

    if suffix == ".pt":
        monkeypatch.setattr(torch, "save", _crashing_writer)
    else:
        monkeypatch.setattr(safetensors.torch, "save_file", _crashing_writer)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(randomise(small("fcn32s"), seed=2), path, meta={"other": 1})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left behind


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", _crashing_writer)
    with pytest.raises(OSError):
        save_checkpoint(small("fcn32s"), tmp_path / "sub" / "model.pt")
    assert os.listdir(tmp_path / "sub") == []


# --- safety: nothing in a file runs ------------------------------------------------------------
class CustomConfig:
    """A class defined here: unpickling an instance would import and construct it."""

    def __init__(self, lr):
        self.lr = lr


class Payload:
    """Unpickling calls open(sentinel, "w"): the file appears only if the payload ran."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def _tensors():
    return {"conv.weight": torch.ones(2, 2)}


def test_custom_class_in_file_is_refused(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save({"state_dict": _tensors(), "config": CustomConfig(0.1)}, path)
    with pytest.raises(ModelFormatError) as info:
        read_weights(path)
    message = str(info.value)
    assert str(path) in message
    assert "weights_only" in message and "pickled" in message


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
@pytest.mark.parametrize("reader", ["read_weights", "load_model", "create_model"])
def test_pickle_payload_is_refused_and_never_runs(tmp_path, writer, reader):
    def write(path, sentinel):
        obj = {**_tensors(), "payload": Payload(sentinel)}
        if writer == "torch.save":
            torch.save(obj, path)
        else:
            with open(path, "wb") as f:
                pickle.dump(obj, f, protocol=2)

    # Control: the payload is real — an unsafe load of the same kind of file runs it.
    control, control_sentinel = tmp_path / "control.pt", tmp_path / "control-ran"
    write(control, control_sentinel)
    if writer == "torch.save":
        loaded = torch.load(control, weights_only=False)
    else:
        with open(control, "rb") as f:
            loaded = pickle.load(f)
    loaded["payload"].close()  # the payload returned the file it opened
    assert control_sentinel.exists()

    path, sentinel = tmp_path / "evil.pt", tmp_path / "payload-ran"
    write(path, sentinel)
    call = {"read_weights": lambda: read_weights(path),
            "load_model": lambda: load_model(path),
            "create_model": lambda: small("fcn32s", weights=path)}[reader]
    with pytest.raises(ModelFormatError) as info:
        call()
    assert str(path) in str(info.value)
    assert "weights_only" in str(info.value) or "pickled" in str(info.value)
    assert not sentinel.exists()


# --- unreadable files --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_checkpoints(tmp_path_factory):
    """Bytes of a real FCN-AlexNet checkpoint in each format."""
    directory = tmp_path_factory.mktemp("ckpt")
    model = randomise(small("fcn32s"))
    return {s: save_checkpoint(model, directory / f"m{s}").read_bytes() for s in SUFFIXES}


def _truncated(suffix):
    def make(path, ckpts):
        data = ckpts[suffix]
        path.write_bytes(data[:len(data) // 2])
    return make


BAD_FILES = {
    "truncated.pt": _truncated(".pt"),
    "truncated.safetensors": _truncated(".safetensors"),
    "empty.pt": lambda p, c: p.write_bytes(b""),
    "empty.safetensors": lambda p, c: p.write_bytes(b""),
    "notes.pt": lambda p, c: p.write_text("hello world\n"),
    "table.pt": lambda p, c: p.write_text("a,b,c\n1,2,3\n"),
    "config.pt": lambda p, c: p.write_text('{"num_classes": 21}\n'),
    "notes.safetensors": lambda p, c: p.write_text("hello world\n"),
    "no-tensors.pt": lambda p, c: torch.save({"epoch": 3, "lr": 0.1, "name": "x"}, p),
    "empty-dict.pt": lambda p, c: torch.save({}, p),
    "tensor-list.pt": lambda p, c: torch.save([torch.zeros(2)], p),
    "missing.pt": None,
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_unreadable_file_is_a_model_format_error(tmp_path, small_checkpoints, name):
    path = tmp_path / name
    if BAD_FILES[name] is not None:
        BAD_FILES[name](path, small_checkpoints)
    with pytest.raises(ModelFormatError) as info:
        read_weights(path)
    assert str(path) in str(info.value)
    assert one_line(info.value)
    with pytest.raises(ModelFormatError):
        load_model(path)


def test_directory_is_not_a_weights_file(tmp_path):
    with pytest.raises(ModelFormatError, match="is a directory"):
        read_weights(tmp_path)


# --- format detection --------------------------------------------------------------------------
@pytest.mark.parametrize("backbone,name", [("alexnet", "fcn32s"), ("alexnet", "fcn16s"),
                                           ("alexnet", "fcn8s"), ("resnet18", "fcn16s"),
                                           ("vgg16", "fcn8s")])
def test_fcn_state_dict_is_detected(tmp_path, backbone, name):
    model = small(name, backbone)
    path = tmp_path / "fcn.pt"
    torch.save(model.state_dict(), path)
    info = read_weights(path)
    assert (info.kind, info.backbone, info.variant) == ("fcn", backbone, name)
    assert info.checkpoint is None
    assert set(info.state_dict) == set(model.state_dict())


@pytest.fixture(scope="module")
def alexnet16(tmp_path_factory):
    model = randomise(small("fcn16s"), seed=3)
    return model, tmp_path_factory.mktemp("alex16")


WRAPPERS = {
    "bare": lambda sd: sd,
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 4},
    "model": lambda sd: {"model": sd, "optimizer": {"state": {}, "param_groups": []}},
    "model_state_dict": lambda sd: {"model_state_dict": sd, "best_iou": 0.61},
    "ddp": lambda sd: {f"module.{k}": v for k, v in sd.items()},
    "ddp-in-model": lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
}


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_wrapped_and_ddp_state_dicts_are_unwrapped(alexnet16, wrapper):
    model, directory = alexnet16
    path = directory / f"{wrapper}.pt"
    torch.save(WRAPPERS[wrapper](model.state_dict()), path)
    info = read_weights(path)
    assert (info.kind, info.backbone, info.variant) == ("fcn", "alexnet", "fcn16s")
    assert set(info.state_dict) == set(model.state_dict())
    loaded = load_model(path)
    assert loaded.config.fc_channels == 16 and loaded.config.num_classes == 3
    assert_same_state(model, loaded)
    x = image()
    assert torch.equal(forward(loaded, x), forward(model, x))


def test_bare_safetensors_state_dict_is_detected(alexnet16):
    from safetensors.torch import save_file

    model, directory = alexnet16
    path = directory / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    info = read_weights(path)
    assert (info.kind, info.backbone, info.variant) == ("fcn", "alexnet", "fcn16s")
    x = image()
    assert torch.equal(forward(load_model(path), x), forward(model, x))


def test_load_model_refuses_a_classifier(tv_files):
    path = tv_files["resnet18"]
    with pytest.raises(ModelFormatError) as info:
        load_model(path)
    assert str(path) in str(info.value) and "create_model" in str(info.value)


# --- ImageNet initialisation from torchvision classifiers (§3.1, §4.1) -------------------------
VGG_FEATURES = {"conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10,
                "conv3_2": 12, "conv3_3": 14, "conv4_1": 17, "conv4_2": 19, "conv4_3": 21,
                "conv5_1": 24, "conv5_2": 26, "conv5_3": 28}
FCN8S_HEAD = ("score_fr.weight", "score_fr.bias", "score_pool4.weight", "score_pool4.bias",
              "upscore2.weight", "score_pool3.weight", "score_pool3.bias",
              "upscore_pool4.weight", "upscore8.weight")


def narrow_classifier(backbone, width=16, num_classes=1000, seed=16):
    """The project's VGG16 or AlexNet classifier state dict (torchvision keys, real conv shapes)
    with fc6/fc7 ``width`` wide: built on the meta device, Linear layers swapped, then filled."""
    cls, first, second, in_features = {"vgg16": (VGG16, 0, 3, 512 * 7 * 7),
                                       "alexnet": (AlexNet, 1, 4, 256 * 6 * 6)}[backbone]
    with torch.device("meta"):
        net = cls(num_classes=num_classes)
        net.classifier[first] = torch.nn.Linear(in_features, width)
        net.classifier[second] = torch.nn.Linear(width, width)
        net.classifier[6] = torch.nn.Linear(width, num_classes)
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) * (0.1 if v.ndim == 1 else 1.0)
            for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def tv_files(tmp_path_factory):
    """Small torchvision-style classifier files: narrowed VGG16 and AlexNet, real ResNet18."""
    directory = tmp_path_factory.mktemp("tv")
    files = {}
    for backbone in ("vgg16", "alexnet"):
        files[backbone] = directory / f"{backbone}.pth"
        torch.save(narrow_classifier(backbone), files[backbone])
    files["resnet18"] = directory / "resnet18.pth"
    torch.save(ResNet18().state_dict(), files["resnet18"])
    return files


@pytest.mark.parametrize("backbone", ["vgg16", "alexnet", "resnet18"])
def test_torchvision_classifier_is_detected(tv_files, backbone):
    info = read_weights(tv_files[backbone])
    assert (info.kind, info.backbone, info.variant) == ("torchvision", backbone, None)
    assert info.checkpoint is None
    assert "classifier.6.weight" in info.state_dict or "fc.weight" in info.state_dict


@pytest.fixture(scope="module")
def tv_vgg16(tv_files):
    """A (narrowed) VGG16 classifier file and the FCN-8s initialised from it."""
    path = tv_files["vgg16"]
    source = torch.load(path, weights_only=True)
    model = create_model("fcn8s", 3, "vgg16", fc_channels=16, weights=path)
    return source, path, model


@pytest.fixture(scope="module")
def tv_alexnet(tmp_path_factory):
    """A full-width AlexNet classifier (and its file) and the FCN-32s initialised from it."""
    with torch.random.fork_rng():
        torch.manual_seed(12)
        classifier = AlexNet().eval()
    path = tmp_path_factory.mktemp("tv_alexnet") / "alexnet.pth"
    torch.save(classifier.state_dict(), path)
    model = create_model("fcn32s", 3, "alexnet", fc_channels=4096, weights=path).eval()
    yield classifier, path, model
    path.unlink()


def test_torchvision_vgg16_initialises_fcn(tv_vgg16):
    source, path, model = tv_vgg16
    own = model.state_dict()
    for conv, index in VGG_FEATURES.items():
        assert torch.equal(own[f"{conv}.weight"], source[f"features.{index}.weight"]), conv
        assert torch.equal(own[f"{conv}.bias"], source[f"features.{index}.bias"]), conv
    # fc → conv (§3.1): a Linear over the flattened 512×7×7 pool5 is a 7×7 convolution.
    assert source["classifier.0.weight"].shape == (16, 25088)
    assert torch.equal(model.fc6.weight, source["classifier.0.weight"].reshape(16, 512, 7, 7))
    assert torch.equal(model.fc6.bias, source["classifier.0.bias"])
    assert torch.equal(model.fc7.weight, source["classifier.3.weight"].reshape(16, 16, 1, 1))
    assert torch.equal(model.fc7.bias, source["classifier.3.bias"])
    # Decapitated: the 1000-way classifier is dropped; the class scores stay zero.
    for layer in (model.score_fr, model.score_pool4, model.score_pool3):
        assert not layer.weight.any() and not layer.bias.any()
    for up in (model.upscore2, model.upscore_pool4, model.upscore8):
        assert is_bilinear(up.weight)
    report = model.load_report
    assert set(report.initialised) == set(FCN8S_HEAD)
    assert set(report.loaded) == ({f"{c}.{leaf}" for c in VGG_FEATURES
                                   for leaf in ("weight", "bias")}
                                  | {"fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias"})
    assert "torchvision" in report.source


def test_classifier_of_another_width_is_reported(tv_vgg16):
    _, path, _ = tv_vgg16
    with pytest.raises(WeightsMismatchError) as info:
        create_model("fcn8s", 3, "vgg16", fc_channels=32, weights=path)
    keys = {_entry_key(e) for e in info.value.mis_shaped}
    assert {"fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias"} <= keys
    assert "(16, 25088)" in str(info.value) and "(32, 512, 7, 7)" in str(info.value)
    assert one_line(info.value)


def test_torchvision_alexnet_initialises_fcn(tv_alexnet):
    classifier, path, model = tv_alexnet
    source = classifier.state_dict()
    for index in (0, 3, 6, 8, 10):
        for leaf in ("weight", "bias"):
            key = f"features.{index}.{leaf}"
            assert torch.equal(model.state_dict()[key], source[key]), key
    assert torch.equal(model.fc6.weight, source["classifier.1.weight"].reshape(4096, 256, 6, 6))
    assert torch.equal(model.fc7.weight, source["classifier.4.weight"].reshape(4096, 4096, 1, 1))
    assert not model.score_fr.weight.any() and not model.score_fr.bias.any()
    assert set(model.load_report.initialised) == {"score_fr.weight", "score_fr.bias",
                                                  "upscore.weight"}
    assert len(model.load_report.loaded) == 14


def test_convolutionalised_alexnet_computes_the_classifier(tv_alexnet):
    """Figure 2: on a 224×224 image pool5 is 6×6; fc6's padded 6×6 convolution has 7×7 cells,
    and cell (3, 3) sees exactly pool5, so fc7 there equals the classifier's second Linear."""
    classifier, _, model = tv_alexnet
    seen = {}
    hooks = [classifier.classifier[4].register_forward_hook(
                 lambda m, i, o: seen.__setitem__("linear", o.clone())),
             model.fc7.register_forward_hook(
                 lambda m, i, o: seen.__setitem__("conv", o.clone()))]
    try:
        x = image(224, 224)
        with torch.no_grad():
            classifier(x)
            model.coarse_scores(x)
    finally:
        for h in hooks:
            h.remove()
    assert seen["conv"].shape[-2:] == (7, 7)
    assert float(seen["linear"].abs().max()) > 0
    torch.testing.assert_close(seen["conv"][:, :, 3, 3], seen["linear"], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def tv_resnet18(tmp_path_factory):
    classifier = randomise(ResNet18(num_classes=5), seed=18)
    directory = tmp_path_factory.mktemp("tv_resnet18")
    path = directory / "resnet18.pth"
    torch.save(classifier.state_dict(), path)
    return classifier, path, directory


def test_torchvision_resnet18_is_detected_and_decapitated(tv_resnet18):
    classifier, path, _ = tv_resnet18
    info = read_weights(path)
    assert (info.kind, info.backbone, info.variant) == ("torchvision", "resnet18", None)
    model = create_model("fcn8s", 3, "resnet18", weights=path)
    assert_same_state(classifier, model, [k for k in classifier.state_dict() if k[:2] != "fc"])
    assert not model.score_fr.weight.any()
    assert set(model.load_report.initialised) == {
        "score_fr.weight", "score_fr.bias", "score_pool4.weight", "score_pool4.bias",
        "upscore2.weight", "score_pool3.weight", "score_pool3.bias", "upscore_pool4.weight",
        "upscore8.weight"}


def test_classifier_with_as_many_classes_becomes_score_fr(tv_resnet18):
    """Figure 2 again: the classifier is the FCN's score_fr, so averaging the coarse score map
    gives the classifier's logits (global average pooling and a Linear commute)."""
    classifier, path, _ = tv_resnet18
    model = create_model("fcn32s", 5, "resnet18", weights=path).eval()
    assert torch.equal(model.score_fr.weight, classifier.fc.weight[:, :, None, None])
    assert torch.equal(model.score_fr.bias, classifier.fc.bias)
    x = image(64, 96)
    with torch.no_grad():
        logits = classifier(x)
        coarse = model.coarse_scores(x)
    assert coarse.shape == (1, 5, 2, 3)
    torch.testing.assert_close(coarse.mean((2, 3)), logits, rtol=1e-4, atol=1e-5)


def test_old_torchvision_resnet_without_num_batches_tracked(tv_resnet18):
    classifier, _, directory = tv_resnet18
    old = {k: v for k, v in classifier.state_dict().items()
           if not k.endswith("num_batches_tracked")}
    assert len(old) < len(classifier.state_dict())
    path = directory / "resnet18-old.pth"
    torch.save(old, path)
    assert read_weights(path).kind == "torchvision"
    model = create_model("fcn16s", 3, "resnet18", weights=path)
    assert torch.equal(model.bn1.running_mean, classifier.bn1.running_mean)
    assert torch.equal(model.layer4[1].bn2.running_var, classifier.layer4[1].bn2.running_var)
    assert torch.equal(model.layer3[0].downsample[0].weight,
                       classifier.layer3[0].downsample[0].weight)
    assert not any(k.endswith("num_batches_tracked") for k in model.load_report.loaded)
    assert "bn1.num_batches_tracked" in model.load_report.initialised


def test_old_fcn_resnet_state_dict_without_num_batches_tracked(tmp_path):
    model = randomise(small("fcn32s", "resnet18"), seed=5)
    path = tmp_path / "old.pt"
    torch.save({k: v for k, v in model.state_dict().items()
                if not k.endswith("num_batches_tracked")}, path)
    loaded = load_model(path)
    x = image()
    assert torch.equal(forward(loaded, x), forward(model, x))


def test_classifier_of_another_backbone_is_refused(tv_files):
    path = tv_files["alexnet"]
    with pytest.raises(ModelFormatError) as info:
        small("fcn32s", "vgg16", weights=path)
    assert "alexnet" in str(info.value) and "vgg16" in str(info.value)
    assert str(path) in str(info.value)


def test_fcn_of_another_backbone_is_refused(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save(small("fcn32s", "resnet18").state_dict(), path)
    with pytest.raises(ModelFormatError) as info:
        small("fcn32s", "alexnet", weights=path)
    assert "resnet18" in str(info.value) and "alexnet" in str(info.value)


# --- staged initialisation: FCN-32s → 16s → 8s (§4.2) ------------------------------------------
@pytest.fixture(scope="module")
def vgg32(tmp_path_factory):
    """A trained-looking FCN-32s (random non-zero weights) saved as a checkpoint."""
    model = randomise(small("fcn32s", "vgg16"), seed=32)
    path = save_checkpoint(model, tmp_path_factory.mktemp("vgg32") / "fcn32s.safetensors")
    return model, path


TRUNK_VGG = [f"{c}.{leaf}" for c in VGG_FEATURES for leaf in ("weight", "bias")] + [
    "fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias"]


def test_staged_fcn32s_to_fcn16s(vgg32):
    m32, path = vgg32
    m16 = small("fcn16s", "vgg16", weights=path).eval()
    assert_same_state(m32, m16, TRUNK_VGG + ["score_fr.weight", "score_fr.bias"])
    assert not m16.score_pool4.weight.any() and not m16.score_pool4.bias.any()
    assert is_bilinear(m16.upscore2.weight) and m16.upscore2.weight.shape[-1] == 4
    assert is_bilinear(m16.upscore16.weight) and m16.upscore16.weight.shape[-1] == 32
    report = m16.load_report
    assert set(report.loaded) == set(m32.state_dict()) - {"upscore.weight"}
    assert set(report.initialised) == {"score_pool4.weight", "score_pool4.bias",
                                       "upscore2.weight", "upscore16.weight"}
    assert "fcn32s" in report.source and "fcn16s" in report.source


class _Ramp(torch.nn.Module):
    """Stands in for score_fr: class scores linear in the cell position."""

    def __init__(self, num_classes):
        super().__init__()
        self.slopes = torch.tensor([[1.0, 0.0], [0.0, -1.5], [0.7, 0.4]])[:num_classes]

    def forward(self, x):
        n, _, h, w = x.shape
        i = torch.arange(h, dtype=x.dtype)[:, None]
        j = torch.arange(w, dtype=x.dtype)[None, :]
        ramp = self.slopes[:, 0, None, None] * i + self.slopes[:, 1, None, None] * j + 2.0
        return ramp.expand(n, -1, -1, -1)


def test_staged_fcn16s_starts_where_fcn32s_left_off(vgg32):
    """Does the freshly initialised FCN-16s compute the FCN-32s scores? Not exactly.

    With score_pool4 zero, FCN-16s upsamples the same score_fr map 2× (4×4 bilinear) and then
    16× (32×32 bilinear); FCN-32s upsamples it 32× at once (64×64 bilinear). Both are piecewise
    linear interpolations of the coarse scores, but the 2× kernel is even: its samples fall a
    quarter cell either side of each coarse cell, so the 16× interpolation cuts the corner at
    each cell (an error of |second difference| / 8 per axis), and at the image border the two
    fade out over different widths. So: (a) the coarse scores are identical; (b) where the
    scores are linear in position, both nets reproduce that plane exactly in the interior (an
    alignment error of even one pixel would show); (c) for any scores the interior difference
    stays within the corner-cutting bound.
    """
    m32, path = vgg32
    m16 = small("fcn16s", "vgg16", weights=path).eval()
    x = image(96, 160)
    coarse = {}
    hooks = [m.score_fr.register_forward_hook(
                 lambda mod, i, o, key=key: coarse.__setitem__(key, o.clone()))
             for key, m in ((32, m32), (16, m16))]
    try:
        out32, out16 = forward(m32, x), forward(m16, x)
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(coarse[32], coarse[16])
    assert coarse[32].shape[-2:] == (3, 5)

    interior = (..., slice(32, -32), slice(32, -32))
    c = coarse[32]
    d2h = (c[..., 2:, :] - 2 * c[..., 1:-1, :] + c[..., :-2, :]).abs().max()
    d2w = (c[..., 2:] - 2 * c[..., 1:-1] + c[..., :-2]).abs().max()
    assert float(d2h + d2w) > 0.1  # the scores do vary, the bound is not trivially zero
    bound = float(d2h + d2w) / 8 + 1e-5
    assert float((out16 - out32)[interior].abs().max()) <= bound

    ramp32, ramp16 = copy.deepcopy(m32), copy.deepcopy(m16)
    ramp32.score_fr = _Ramp(3)
    ramp16.score_fr = _Ramp(3)
    plane32, plane16 = forward(ramp32, x)[interior], forward(ramp16, x)[interior]
    # Edge layout: stride-32 cell (i, j) is centred on pixel (32 i + 15.5, 32 j + 15.5).
    ys = (torch.arange(32, 96 - 32, dtype=torch.float32)[:, None] - 15.5) / 32
    xs = (torch.arange(32, 160 - 32, dtype=torch.float32)[None, :] - 15.5) / 32
    slopes = _Ramp(3).slopes
    plane = slopes[:, 0, None, None] * ys + slopes[:, 1, None, None] * xs + 2.0
    torch.testing.assert_close(plane32[0], plane, rtol=0, atol=1e-4)
    torch.testing.assert_close(plane16[0], plane, rtol=0, atol=1e-4)


def test_staged_fcn16s_to_fcn8s(tmp_path):
    m16 = randomise(small("fcn16s", "vgg16"), seed=16, upscore=True)
    path = tmp_path / "fcn16s.pt"
    torch.save(m16.state_dict(), path)  # a plain state dict this time
    m8 = small("fcn8s", "vgg16", weights=path)
    copied = TRUNK_VGG + ["score_fr.weight", "score_fr.bias", "score_pool4.weight",
                          "score_pool4.bias", "upscore2.weight"]
    assert_same_state(m16, m8, copied)
    assert m16.score_pool4.weight.any() and not is_bilinear(m8.upscore2.weight)
    assert not m8.score_pool3.weight.any() and not m8.score_pool3.bias.any()
    assert is_bilinear(m8.upscore_pool4.weight) and m8.upscore_pool4.weight.shape[-1] == 4
    assert is_bilinear(m8.upscore8.weight) and m8.upscore8.weight.shape[-1] == 16
    assert set(m8.load_report.loaded) == set(copied)
    assert set(m8.load_report.initialised) == {"score_pool3.weight", "score_pool3.bias",
                                               "upscore_pool4.weight", "upscore8.weight"}


def test_staged_fcn32s_to_fcn8s_in_one_step(vgg32):
    m32, path = vgg32
    m8 = small("fcn8s", "vgg16", weights=path)
    assert_same_state(m32, m8, TRUNK_VGG + ["score_fr.weight", "score_fr.bias"])
    assert set(m8.load_report.initialised) == set(FCN8S_HEAD[2:])


@pytest.mark.parametrize("fine,coarse", [("fcn8s", "fcn32s"), ("fcn8s", "fcn16s"),
                                         ("fcn16s", "fcn32s")])
def test_fine_to_coarse_is_refused(tmp_path, fine, coarse):
    path = tmp_path / f"{fine}.pt"
    torch.save(small(fine).state_dict(), path)
    with pytest.raises(ModelFormatError) as info:
        small(coarse, weights=path)
    assert fine in str(info.value) and coarse in str(info.value)
    assert not isinstance(info.value, WeightsMismatchError)
    with pytest.raises(ModelFormatError):
        load_model(path, name=coarse)


# --- mismatches --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def alex32_state(tmp_path_factory):
    return randomise(small("fcn32s", num_classes=5), seed=9).state_dict(), \
        tmp_path_factory.mktemp("mismatch")


def _entry_key(entry):
    return entry.split(":")[0]


def test_num_classes_mismatch_is_reported(alex32_state):
    state, directory = alex32_state
    path = directory / "five-classes.pt"
    torch.save(state, path)
    with pytest.raises(WeightsMismatchError) as info:
        small("fcn32s", num_classes=3, weights=path)
    err = info.value
    assert err.missing == [] and err.unexpected == []
    assert {_entry_key(e) for e in err.mis_shaped} == {"score_fr.weight", "score_fr.bias",
                                                       "upscore.weight"}
    message = str(err)
    assert "score_fr.weight" in message
    assert "(5, 16, 1, 1)" in message and "(3, 16, 1, 1)" in message
    assert one_line(err)
    with pytest.raises(WeightsMismatchError):
        load_model(path, num_classes=3)


def test_missing_keys_are_reported(alex32_state):
    state, directory = alex32_state
    path = directory / "missing.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("fc7.")}, path)
    with pytest.raises(WeightsMismatchError) as info:
        load_model(path)
    err = info.value
    assert err.missing == ["fc7.weight", "fc7.bias"]
    assert err.unexpected == [] and err.mis_shaped == []
    assert "fc7.weight" in str(err) and "fc7.bias" in str(err) and one_line(err)


def test_unexpected_keys_are_reported(alex32_state):
    state, directory = alex32_state
    path = directory / "extra.pt"
    torch.save({**state, "aux_head.weight": torch.zeros(5, 16, 1, 1),
                "aux_head.bias": torch.zeros(5)}, path)
    with pytest.raises(WeightsMismatchError) as info:
        load_model(path)
    err = info.value
    assert sorted(err.unexpected) == ["aux_head.bias", "aux_head.weight"]
    assert err.missing == [] and err.mis_shaped == []
    assert "aux_head.weight" in str(err) and one_line(err)


def test_many_missing_keys_stay_one_readable_line(tmp_path):
    model = small("fcn32s", "resnet18")
    path = tmp_path / "no-layer1.pt"
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("layer1.")},
               path)
    with pytest.raises(WeightsMismatchError) as info:
        load_model(path)
    err = info.value
    expected = [k for k in model.state_dict()
                if k.startswith("layer1.") and not k.endswith("num_batches_tracked")]
    assert err.missing == expected and len(expected) > 8
    message = str(err)
    assert one_line(err) and f"{len(expected)} missing" in message
    assert f"{len(expected) - 8} more" in message and len(message) < 1000


# --- create_model's argument checks ------------------------------------------------------------
@pytest.mark.parametrize("kwargs,names", [
    ({"fc_chanels": 16}, ["fc_chanels", "learnable_upsampling", "fc_channels", "dropout",
                          "in_channels"]),
    ({"name": "fcn4s"}, ["fcn4s", "fcn32s", "fcn16s", "fcn8s"]),
    ({"backbone": "resnet50"}, ["resnet50", "vgg16", "alexnet", "resnet18"]),
    ({"layout": "caffe"}, ["caffe", "edge", "reference"]),
    ({"layout": "reference", "backbone": "resnet18"}, ["reference", "vgg16", "edge"]),
    ({"layout": "reference", "backbone": "alexnet"}, ["reference", "vgg16", "edge"]),
    ({"num_classes": 0}, ["num_classes"]),
    ({"num_classes": -3}, ["num_classes"]),
    ({"num_classes": 2.5}, ["num_classes"]),
    ({"num_classes": True}, ["num_classes"]),
    ({"fc_channels": 0}, ["fc_channels"]),
    ({"dropout": 1.0}, ["dropout"]),
    ({"in_channels": 0}, ["in_channels"]),
])
def test_create_model_rejects_bad_arguments(kwargs, names):
    with pytest.raises(InputError) as info:
        create_model(**kwargs)
    for name in names:
        assert name in str(info.value)


def test_load_model_rejects_unknown_override(alex32_state):
    state, directory = alex32_state
    path = directory / "ok.pt"
    torch.save(state, path)
    with pytest.raises(InputError, match="colour"):
        load_model(path, colour="red")
    assert load_model(path).config.num_classes == 5
