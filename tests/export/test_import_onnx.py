"""``fcn-edge import``: foreign segmentation ONNX files, exported here by plain
``torch.onnx.export`` in the four shapes the issue names (a coarse score grid like
jetson-inference's FCN-ResNet18, full-resolution dynamic logits like torchvision's, a fixed input
size, an NHWC input), made self-describing and run through Segmenter and ``fcn-edge run``; and
the bad input that must be refused in one line with nothing written."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from faults import run_cli
from fcn_edge.errors import InputError
from fcn_edge.export.import_onnx import ImportOptions, import_onnx
from fcn_edge.export.trt_compat import check_onnx_file, format_reports
from fcn_edge.runtime import Segmenter
from support import smooth_image, write_rgb

VOC = 21


class Coarse(nn.Module):
    """Logits at 1/8 of the input, as jetson-inference's FCN-ResNet18 ONNX gives them."""

    def __init__(self, classes: int = VOC, nhwc: bool = False, full: bool = False,
                 extra: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1),
                                  nn.ReLU(), nn.Conv2d(8, classes, 3, 2, 1))
        self.nhwc, self.full, self.extra = nhwc, full, extra

    def forward(self, x):
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        scores = self.body(x)
        if self.full:  # torchvision's FCN: upsampled to the input inside the model
            scores = F.interpolate(scores, size=x.shape[2:], mode="bilinear",
                                   align_corners=False)
        return (scores, scores.mean((2, 3))) if self.extra else scores


class Pooled(nn.Module):
    """A classifier: N×classes, not a score map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, VOC, 3, 1, 1)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def export(module: nn.Module, path: Path, *, shape=(1, 3, 64, 96), dynamic=True,
           outputs=("out",), input_name="input") -> Path:
    """Plain ``torch.onnx.export``, as a user of another project would write it."""
    axes = {}
    if dynamic:
        hw = {0: "batch", 1: "height", 2: "width"} if shape[3] == 3 else \
            {0: "batch", 2: "height", 3: "width"}
        axes = {input_name: hw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.randn(*shape),), str(path), dynamo=False,
                          opset_version=17, input_names=[input_name], output_names=list(outputs),
                          dynamic_axes=axes or None)
    return path


def original_labels(path: Path, frame: np.ndarray, full: bool) -> np.ndarray:
    """Argmax of the original model's logits for a BGR frame, normalised as ImageNet RGB,
    bilinearly upsampled to the frame (half-pixel) when they come on a coarse grid."""
    x = (frame[..., ::-1] / 255.0 - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
    x = x.transpose(2, 0, 1)[None].astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scores = torch.from_numpy(session.run(None, {"input": x})[0])
    if not full:
        scores = F.interpolate(scores, size=frame.shape[:2], mode="bilinear",
                               align_corners=False)
    return scores.argmax(1)[0].numpy().astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("import")


def _frames(n=3, h=64, w=96):
    return [smooth_image(i, h, w) for i in range(n)]


def _run_cli_on(model: Path, tmp: Path, h: int, w: int) -> None:
    """``fcn-edge run`` on a few images: one mask per image, at its size."""
    images, out = tmp / "images", tmp / "masks"
    images.mkdir()
    for i, frame in enumerate(_frames(3, h, w)):
        write_rgb(images / f"{i}.png", frame)
    done = run_cli(["run", str(images), "--model", str(model), "--save-masks", str(out)])
    assert done.returncode == 0, done.stderr
    import cv2
    masks = sorted(out.glob("*.png"))
    assert len(masks) == 3
    for mask in masks:
        assert cv2.imread(str(mask), cv2.IMREAD_UNCHANGED).shape[:2] == (h, w)


@pytest.mark.parametrize("kind", ["coarse", "full", "fixed", "nhwc"])
def test_foreign_shapes_run_like_ours(kind, folder, tmp_path):
    full = kind in ("full", "fixed")
    module = Coarse(nhwc=kind == "nhwc", full=full)
    shape = (1, 64, 96, 3) if kind == "nhwc" else (1, 3, 64, 96)
    src = export(module, folder / f"{kind}.onnx", shape=shape, dynamic=kind != "fixed")
    out = import_onnx(src, ImportOptions(classes="voc"), tmp_path / "m.onnx", log=lambda s: None)
    with Segmenter(out) as seg:
        assert seg.classes[:2] == ("background", "aeroplane")
        for frame in _frames(2, 72, 120) + _frames(1, 64, 96):
            labels = seg(frame)
            assert labels.shape == frame.shape[:2]
            if kind in ("coarse", "full"):
                assert np.array_equal(labels, original_labels(src, frame, full))
        if kind == "fixed":
            assert seg.stats.resized == 2  # the 72×120 frames went in at 64×96
    _run_cli_on(out, tmp_path, 72, 120)


def _refused(tmp_path, src, match, **options) -> None:
    out = tmp_path / "never.onnx"
    with pytest.raises(InputError, match=match) as info:
        import_onnx(src, ImportOptions(**options), out, log=lambda s: None)
    assert "\n" not in str(info.value)
    assert not out.exists() and not list(tmp_path.glob(".never.onnx*"))


def test_wrong_class_count_is_refused(folder, tmp_path):
    src = export(Coarse(), folder / "voc.onnx")
    _refused(tmp_path, src, "has 21 score channels but --classes cityscapes names 19",
             classes="cityscapes")


def test_not_a_score_map_is_refused(folder, tmp_path):
    src = export(Pooled(), folder / "pooled.onnx")
    _refused(tmp_path, src, "not a score map", classes="voc")


def test_several_outputs_need_score_output(folder, tmp_path):
    src = export(Coarse(extra=True), folder / "two.onnx", outputs=("scores", "aux"))
    _refused(tmp_path, src, "has 2 outputs \\(scores, aux\\): say which", classes="voc")
    _refused(tmp_path, src, "no such output", classes="voc", score_output="nope")
    out = import_onnx(src, ImportOptions(classes="voc", score_output="scores"),
                      tmp_path / "ok.onnx", log=lambda s: None)
    with Segmenter(out) as seg:
        assert seg(_frames(1)[0]).shape == (64, 96)


def test_classes_file_and_bad_flags(folder, tmp_path):
    src = export(Coarse(classes=3), folder / "three.onnx")
    names = tmp_path / "names.txt"
    names.write_text("sky\nroad\ncar\n")
    out = import_onnx(src, ImportOptions(classes=str(names), mean=(104.0, 117.0, 123.0),
                                         std=(1.0, 1.0, 1.0), scale=1.0, color="bgr"),
                      tmp_path / "three.fcn.onnx", log=lambda s: None)
    with Segmenter(out) as seg:
        assert seg.classes == ("sky", "road", "car") and seg.meta.color_order == "bgr"
        assert seg.meta.mean[0] == pytest.approx(104 / 255)
    _refused(tmp_path, src, "--classes nowhere: neither voc", classes="nowhere")
    _refused(tmp_path, src, "the mean must lie in 0..255", classes=str(names),
             mean=(300.0, 0.0, 0.0), scale=1.0)


def test_cli_import_writes_and_refuses_in_one_line(folder, tmp_path):
    src = export(Coarse(), folder / "cli.onnx")
    done = run_cli(["import", str(src), "--classes", "voc", "--mean", "0.5", "0.5", "0.5",
                    "--std", "0.25", "0.25", "0.25", "-o", str(tmp_path / "cli.fcn.onnx")])
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cli.fcn.onnx").is_file()
    bad = run_cli(["import", str(src), "--classes", "cityscapes", "-o", str(tmp_path / "x.onnx")])
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "21 score channels" in bad.stderr and not (tmp_path / "x.onnx").exists()
    flag = run_cli(["import", str(src), "--classes", "voc", "--scale", "0"])
    assert flag.returncode == 1 and "--scale must be positive" in flag.stderr, flag.stderr


def test_our_tensor_names_in_a_foreign_graph(folder, tmp_path):
    """An NHWC input already called ``images`` and a coarse output already called ``logits``
    keep their places beside the Transpose and the Resize the import adds."""
    src = export(Coarse(nhwc=True), folder / "named.onnx", shape=(1, 64, 96, 3),
                 outputs=("logits",), input_name="images")
    out = import_onnx(src, ImportOptions(classes="voc"), tmp_path / "n.onnx", log=lambda s: None)
    with Segmenter(out) as seg:
        assert seg(_frames(1, 72, 120)[0]).shape == (72, 120)


@pytest.mark.parametrize("kind", ["coarse", "full"])
def test_argmax_appended(kind, folder, tmp_path):
    """--argmax: labels out of the graph, the argmax of the (upsampled) original logits."""
    full = kind == "full"
    src = export(Coarse(full=full), folder / f"argmax_{kind}.onnx")
    out = import_onnx(src, ImportOptions(classes="voc", argmax=True), tmp_path / "a.onnx",
                      log=lambda s: None)
    with Segmenter(out) as seg:
        assert seg.meta.argmax and seg.meta.output_name == "labels"
        for frame in _frames(2, 72, 120):
            assert np.array_equal(seg(frame), original_labels(src, frame, full))
    _run_cli_on(out, tmp_path, 72, 120)


@pytest.mark.parametrize("kind", ["coarse", "nhwc"])
def test_raw_io_and_argmax_appended(kind, folder, tmp_path):
    """--raw-io --argmax: the lean path (uint8 BGR frames in, labels out: no copy per frame)."""
    src = export(Coarse(nhwc=kind == "nhwc"), folder / f"raw_{kind}.onnx",
                 shape=(1, 64, 96, 3) if kind == "nhwc" else (1, 3, 64, 96))
    out = import_onnx(src, ImportOptions(classes="voc", argmax=True, raw_io=True),
                      tmp_path / "r.onnx", log=lambda s: None)
    reports = check_onnx_file(out, ("8.6", "10", "11"))
    assert all(r.ok for r in reports), format_reports(reports, out)  # uint8 feeds only a Cast
    with Segmenter(out) as seg:
        assert seg.meta.raw_io and seg.meta.input_name == "frames"
        frame = np.ascontiguousarray(_frames(1, 64, 96)[0])
        labels = seg(frame)
        assert seg.stats.copies == 0
        if kind == "coarse":
            agree = (labels == original_labels(src, frame, False)).mean()
            assert agree > 0.999
    _run_cli_on(out, tmp_path, 72, 120)


def test_given_colours_and_provenance_go_into_the_metadata(folder, tmp_path):
    src = export(Coarse(classes=3), folder / "three.onnx")
    names = tmp_path / "names.txt"
    names.write_text("road\ncar\nsky\n")
    colours = ((128, 64, 128), (0, 0, 142), (70, 130, 180))
    out = import_onnx(src, ImportOptions(classes=str(names), palette=colours,
                                         provenance=(("zoo", "test/three"),)),
                      tmp_path / "m.onnx", log=lambda s: None)
    with Segmenter(out) as seg:
        assert seg.meta.palette == colours and seg.classes == ("road", "car", "sky")
        assert seg.meta.export_options["zoo"] == "test/three"
    with pytest.raises(InputError, match="2 colours for 3 classes: give one colour per class"):
        import_onnx(src, ImportOptions(classes=str(names), palette=colours[:2]),
                    tmp_path / "never.onnx", log=lambda s: None)
    assert not (tmp_path / "never.onnx").exists()


def test_cli_colors_file_as_jetson_inference_writes_it(folder, tmp_path):
    src = export(Coarse(classes=3), folder / "three_cli.onnx")
    names, colours = tmp_path / "classes.txt", tmp_path / "colors.txt"
    names.write_text("road\ncar\nsky\n")
    colours.write_text("128 64 128\n\n0 0 142 255\n70 130 180\n")  # a blank line, an alpha
    out = tmp_path / "m.onnx"
    done = run_cli(["import", str(src), "--classes", str(names), "--colors", str(colours),
                    "-o", str(out)])
    assert done.returncode == 0, done.stderr
    with Segmenter(out) as seg:
        assert seg.meta.palette == ((128, 64, 128), (0, 0, 142), (70, 130, 180))
    colours.write_text("128 64 128\n0 0 142\n")
    short = run_cli(["import", str(src), "--classes", str(names), "--colors", str(colours),
                     "-o", str(tmp_path / "never.onnx")])
    assert short.returncode != 0 and "2 colours for 3 classes" in short.stderr
    assert short.stderr.count("\n") == 1 and not (tmp_path / "never.onnx").exists()
    colours.write_text("128 64\n")
    bad = run_cli(["import", str(src), "--classes", str(names), "--colors", str(colours)])
    assert bad.returncode != 0 and "is not 'R G B'" in bad.stderr
