"""Late fusion (paper §5): scores of an RGB and a depth stream summed, one tensor in and out."""
from __future__ import annotations

import onnxruntime as ort
import pytest
import torch

from fcn_edge.errors import InputError
from fcn_edge.models import create_model
from fcn_edge.models.fusion import LateFusionFCN

from support import awaken


def _stream(in_channels: int, seed: int, name: str = "fcn16s"):
    torch.manual_seed(seed)
    model = create_model(name, num_classes=4, backbone="resnet18", in_channels=in_channels)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.startswith("score"):
                p.normal_(0, 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def fused():
    return LateFusionFCN([_stream(3, 0), _stream(3, 1, "fcn32s")], names=["rgb", "hha"]).eval()


def test_scores_are_the_sum_of_the_streams(fused):
    x = torch.rand(2, 6, 45, 61)
    with torch.no_grad():
        out = fused(x)
        parts = fused.stream_scores(x)
        expected = fused.streams["rgb"](x[:, :3]) + fused.streams["hha"](x[:, 3:])
    assert out.shape == (2, 4, 45, 61)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out, parts["rgb"] + parts["hha"])
    assert fused.in_channels == 6 and fused.num_classes == 4
    assert set(fused.state_dict()) >= {"streams.rgb.conv1.weight", "streams.hha.conv1.weight"}


def test_streams_of_different_widths(fused):
    model = LateFusionFCN([_stream(3, 0), _stream(1, 2)]).eval()  # RGB + raw depth
    x = torch.rand(1, 4, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.streams["stream0"](x[:, :3])
                                   + model.streams["stream1"](x[:, 3:]))


def test_bad_streams_and_inputs_are_refused(fused):
    with pytest.raises(InputError, match="at least two"):
        LateFusionFCN([_stream(3, 0)])
    other = create_model("fcn32s", num_classes=5, backbone="resnet18")
    with pytest.raises(InputError, match="same classes"):
        LateFusionFCN([_stream(3, 0), other])
    with pytest.raises(InputError, match="distinct name"):
        LateFusionFCN([_stream(3, 0), _stream(3, 1)], names=["a", "a"])
    with pytest.raises(InputError, match=r"N×6×H×W .*3 \+ 3"):
        fused(torch.rand(1, 3, 32, 32))


def test_exports_to_one_onnx_graph_with_dynamic_size(fused, tmp_path):
    path = tmp_path / "fused.onnx"
    torch.onnx.export(fused, torch.rand(1, 6, 64, 64), str(path), input_names=["images"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"images": {0: "n", 2: "h", 3: "w"},
                                    "logits": {0: "n", 2: "h", 3: "w"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 6, 77, 93)
    with torch.no_grad():
        expected = fused(x).numpy()
    got = session.run(None, {"images": x.numpy()})[0]
    assert got.shape == expected.shape
    assert abs(got - expected).max() <= 1e-4 * max(1.0, abs(expected).max())


@pytest.mark.parametrize("backbone", ["mobilenet_v3_large", "googlenet"])
def test_the_edge_backbones_fuse_late(backbone):
    """RGB + raw depth streams of an edge trunk: the sum of the streams, one tensor in."""
    torch.manual_seed(0)
    model = awaken(create_model("fcn8s", num_classes=4, backbone=backbone,
                                inputs=(("rgb", 3), ("depth", 1)), fusion="late"))
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "score" in key.split(".")[-2]:
                p.normal_(0, 0.05)
    model.eval()
    assert isinstance(model, LateFusionFCN)
    x = torch.rand(1, 4, 37, 53)
    with torch.no_grad():
        out = model(x)
        expected = model.streams["rgb"](x[:, :3]) + model.streams["depth"](x[:, 3:])
    assert out.shape == (1, 4, 37, 53)
    torch.testing.assert_close(out, expected)
    assert out.abs().max() > 0
