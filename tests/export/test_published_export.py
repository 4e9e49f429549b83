"""Published models deploy like our own nets: a jetson-inference trainer's checkpoint
(fcn_resnet18, pytorch-segmentation's ``model_best.pth`` layout), a torchvision fcn_resnet50
state dict and a released Caffe FCN-8s (pytorch-fcn's layout) export with parity, run through
``Segmenter`` and ``fcn-edge run``;
and the ONNX that jetson-inference's own ``onnx_export.py`` writes (a coarse grid at a fixed
size) gives, once imported, the labels our rebuilt model gives."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))

from faults import run_cli  # noqa: E402
from fcn_edge.export.exporter import ExportConfig, export  # noqa: E402
from fcn_edge.export.import_onnx import ImportOptions, import_onnx  # noqa: E402
from fcn_edge.models.pretrained_data import DEEPSCENE  # noqa: E402
from fcn_edge.runtime import Segmenter  # noqa: E402
from support import smooth_image, write_rgb  # noqa: E402
from test_jetson_fcn import BLOCKS, jetson_layout, trainer_checkpoint  # noqa: E402
from test_jetson_fcn import random_state as jetson_state  # noqa: E402
from test_torchvision_fcn import random_state, torchvision_layout  # noqa: E402


def _frames(n: int, h: int, w: int) -> list[np.ndarray]:
    return [smooth_image(10 + i, h, w) for i in range(n)]


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


@pytest.fixture(scope="module")
def jetson_pth(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("jetson")
    state = jetson_state(jetson_layout(BLOCKS["fcn_resnet18"], 5, aux=True), seed=4)
    return trainer_checkpoint(folder / "model_best.pth", state, dataset="deepscene", classes=5)


def test_jetson_checkpoint_exports_and_runs_through_the_cli(jetson_pth, tmp_path):
    out = tmp_path / "export"
    done = run_cli(["export", str(jetson_pth), "-o", str(out), "--parity-sizes", "64x128,50x70"])
    assert done.returncode == 0, done.stderr
    onnx_path = out / "model_best.onnx"
    report = json.loads((out / "model_best.export.json").read_text())
    assert "parity" in json.dumps(report)
    with Segmenter(onnx_path) as seg, Segmenter(jetson_pth) as ref:
        assert seg.classes == DEEPSCENE == ref.classes
        assert (seg.meta.model, seg.meta.output_stride) == ("fcn_resnet18", 32)
        assert seg.meta.shapes.opt[1:] == (256, 512)  # the trainer's resolution
        for frame in _frames(2, 96, 160):
            assert _agreement(seg(frame), ref(frame)) > 0.999
    _run_cli_on(onnx_path, tmp_path)


@pytest.mark.parametrize("opset", [9, 11])
def test_jetsons_own_onnx_export_imported_gives_our_models_labels(jetson_pth, tmp_path, opset):
    # What pytorch-segmentation's onnx_export.py writes: the fork's export_onnx mode (the
    # coarse grid, no upsampling), a fixed input of the training resolution, input_0/output_0,
    # at torch 1.x's default opset 9 (where Resize does not exist yet: the import converts).
    from fcn_edge.models import load_model

    model = load_model(jetson_pth).eval()

    class ExportMode(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner.scores(x)

    src = tmp_path / "fcn_resnet18.onnx"
    torch.onnx.export(ExportMode(model), torch.ones(1, 3, 128, 256), str(src), dynamo=False,
                      input_names=["input_0"], output_names=["output_0"], opset_version=opset)
    assert onnx.load(str(src)).opset_import[0].version == opset
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(DEEPSCENE) + "\n")
    out = import_onnx(src, ImportOptions(classes=str(classes)), tmp_path / "m.onnx",
                      log=lambda s: None)
    with Segmenter(out) as seg, Segmenter(jetson_pth) as ref:
        assert seg.classes == DEEPSCENE
        frame = _frames(1, 128, 256)[0]  # the ONNX's own size: no resize on the way in
        assert _agreement(seg(frame), ref(frame)) > 0.999


@pytest.mark.slow
def test_torchvision_fcn_resnet50_state_dict_exports_with_parity_and_runs(tmp_path):
    state = random_state(torchvision_layout((3, 4, 6, 3), classes=21), seed=5)
    path = tmp_path / "fcn_resnet50_coco.pth"
    torch.save(state, path)
    result = export(ExportConfig(checkpoint=str(path), out_dir=str(tmp_path / "out"),
                                 parity_sizes=((64, 96),)), log=lambda s: None)
    onnx_path = result.artifacts["fp32"]
    assert result.meta.model == "fcn_resnet50" and result.meta.output_stride == 8
    parity = result.meta.parity["sizes"][0]
    assert parity["agreement"] > 0.999 and parity["rel_max_abs"] < 1e-4, parity
    graph = onnx.load(str(onnx_path))
    assert not any("aux_classifier" in i.name for i in graph.graph.initializer)
    with Segmenter(onnx_path) as seg, Segmenter(path) as ref:
        assert len(seg.classes) == 21 and seg.classes[0] == "class_0"  # a bare state dict
        frame = _frames(1, 80, 120)[0]
        assert _agreement(seg(frame), ref(frame)) > 0.999
    _run_cli_on(onnx_path, tmp_path)


def _run_cli_on(model: Path, tmp: Path) -> None:
    """``fcn-edge run`` over two images: one mask each, at the image's size."""
    images, masks = tmp / "images", tmp / "masks"
    images.mkdir()
    for i, frame in enumerate(_frames(2, 72, 120)):
        write_rgb(images / f"{i}.png", frame)
    ran = run_cli(["run", str(images), "--model", str(model), "--save-masks", str(masks)])
    assert ran.returncode == 0, ran.stderr
    assert len(list(masks.glob("*.png"))) == 2


@pytest.mark.slow
def test_released_caffe_fcn8s_exports_as_released_and_runs(tmp_path):
    # A file in the released nets' layout (pytorch-fcn's fcn8s_from_caffe.pth, with narrow
    # fc6/fc7 to stay small): recognised without a --layout, exported with parity, run with
    # Caffe's BGR mean pixel.
    from fcn_edge.models import create_model, reference_state_dict

    torch.manual_seed(8)
    source = create_model("fcn8s", 21, "vgg16", layout="reference", fc_channels=32)
    with torch.no_grad():
        for name, p in source.named_parameters():
            if name.startswith("score"):
                p.normal_(0, 0.01)  # the score layers start at zero: give them a signal
    path = tmp_path / "fcn8s_from_caffe.pth"
    torch.save(reference_state_dict(source), path)
    out = tmp_path / "export"
    done = run_cli(["export", str(path), "-o", str(out), "--parity-sizes", "64x96"])
    assert done.returncode == 0, done.stderr
    onnx_path = out / "fcn8s_from_caffe.onnx"
    with Segmenter(onnx_path) as seg, Segmenter(path) as ref:
        assert seg.meta.model_options["layout"] == "reference"
        assert seg.meta.color_order == "bgr" and seg.classes[15] == "person"
        frame = _frames(1, 64, 96)[0]
        assert _agreement(seg(frame), ref(frame)) > 0.999
    _run_cli_on(onnx_path, tmp_path)


def test_int8_calibrates_a_published_model_on_images_of_other_classes(jetson_pth, tmp_path):
    # Calibration needs images, not labels: the procedural scenes (8 classes) calibrate a
    # 5-class model; they are not its evaluation data, so ΔmIoU is left out, not an error.
    out = tmp_path / "export"
    done = run_cli(["export", str(jetson_pth), "-o", str(out), "--int8", "--calib", "synthetic",
                    "--calib-images", "2", "--parity-sizes", "64x128"])
    assert done.returncode == 0, done.stderr
    assert (out / "model_best.int8.onnx").is_file()
    assert "no labelled data for ΔmIoU" in done.stdout + done.stderr
    with Segmenter(out / "model_best.int8.onnx") as seg:
        assert seg.classes == DEEPSCENE and seg(_frames(1, 64, 128)[0]).shape == (64, 128)
    wrong = run_cli(["export", str(jetson_pth), "-o", str(tmp_path / "never"), "--fp16",
                     "--eval-data", "synthetic"])
    assert wrong.returncode != 0 and "has 8 classes but the model predicts 5" in wrong.stderr
    assert not (tmp_path / "never").exists()


def test_aux_head_exported_only_when_asked(jetson_pth, tmp_path):
    out = tmp_path / "aux"
    done = run_cli(["export", str(jetson_pth), "-o", str(out), "--aux", "--parity-sizes",
                    "64x128"])
    assert done.returncode == 0, done.stderr
    with Segmenter(out / "model_best.onnx") as seg, Segmenter(jetson_pth) as plain:
        assert [h.task for h in seg.meta.heads] == ["out", "aux"]
        assert seg.meta.output_names == ("logits_out", "logits_aux")
        assert all(h.classes == DEEPSCENE for h in seg.meta.heads)
        frame = _frames(1, 64, 128)[0]
        both = seg(frame)
        assert _agreement(both["out"], plain(frame)) > 0.999  # the plain export's head
        assert not np.array_equal(both["aux"], both["out"])
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    write_rgb(images / "0.png", _frames(1, 72, 120)[0])
    ran = run_cli(["run", str(images), "--model", str(out / "model_best.onnx"), "--head", "aux",
                   "--save-masks", str(masks)])
    assert ran.returncode == 0, ran.stderr
    assert [len(list((masks / task).glob("*.png"))) for task in ("out", "aux")] == [1, 1]
    # A file without the aux head (trained without --aux-loss): one line, nothing written.
    state = jetson_state(jetson_layout(BLOCKS["fcn_resnet18"], 5, aux=False))
    bare = trainer_checkpoint(tmp_path / "no_aux.pth", state, dataset="deepscene", classes=5)
    refused = run_cli(["export", str(bare), "-o", str(tmp_path / "never"), "--aux"])
    assert refused.returncode != 0 and "holds no aux head" in refused.stderr
    assert refused.stderr.count("\n") == 1 and not (tmp_path / "never").exists()


def test_aux_on_a_skip_net_is_refused_before_anything_is_written(tmp_path):
    from fcn_edge.errors import InputError
    from fcn_edge.models import create_model, save_checkpoint

    path = save_checkpoint(create_model("fcn32s", num_classes=3, backbone="resnet18"),
                           tmp_path / "ours.pt")
    with pytest.raises(InputError, match="fcn32s has none: leave --aux out"):
        export(ExportConfig(checkpoint=str(path), out_dir=str(tmp_path / "out"), aux=True),
               log=lambda s: None)
    assert not any((tmp_path / "out").glob("*.onnx"))
