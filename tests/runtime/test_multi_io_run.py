"""`fcn-edge run` with the §5 models: an RGB-D two-headed one (depth PNGs matched to images by
file stem, overlays of the head chosen with --head, masks for every head), an RGB-HHA late
fusion one (--hha), and one clear line for every input the run cannot use."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcn_edge.cli import main
from fcn_edge.data import read_palette_png
from fcn_edge.errors import InputError
from fcn_edge.runtime import Segmenter
from fcn_edge.runtime.paired import match_files, read_depth, read_hha, with_extras
from fcn_edge.runtime.sources import open_source

from support import write_video
from support_multi_io import (GEOMETRIC_PALETTE, export_artifact, make_multi_checkpoint,
                              scene_depth, write_depth_png)

STEMS = ("a", "b10", "b2")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("rgbd_run")
    return export_artifact(make_multi_checkpoint(tmp / "two.pt"), tmp, raw_io=True, argmax=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory, scene) -> tuple[Path, Path, dict]:
    """A folder of RGB PNGs (lossless: the overlays are checked pixel by pixel) and a folder
    of their 16-bit depth PNGs, named alike; the arrays by stem."""
    root = tmp_path_factory.mktemp("rgbd_images")
    arrays = {}
    for i, stem in enumerate(STEMS):
        frame = scene(40, 56, seed=10 + i)
        depth = scene_depth(frame, seed=i)
        (root / "rgb").mkdir(exist_ok=True)
        assert cv2.imwrite(str(root / "rgb" / f"{stem}.png"), frame)
        write_depth_png(root / "depth" / f"{stem}.png", depth)
        arrays[stem] = (frame, depth)
    return root / "rgb", root / "depth", arrays


def _run(model, source, *extra) -> int:
    return main(["run", str(source), "--model", str(model), "--progress-every", "0", *extra])


def test_run_writes_the_chosen_heads_overlays_and_every_heads_masks(model, images, tmp_path,
                                                                     capsys):
    rgb, depth, arrays = images
    out, masks = tmp_path / "out", tmp_path / "masks"
    assert _run(model, rgb, "--depth", str(depth), "--head", "geometric", "--alpha", "1",
                "--output", str(out), "--save-masks", str(masks)) == 0
    assert "overlays of head geometric" in capsys.readouterr().out
    with Segmenter(model) as seg:
        for stem, (frame, depth_mm) in arrays.items():
            expected = seg(frame, depth=depth_mm)
            for task in ("semantic", "geometric"):  # every head's masks, a folder per task
                labels, palette = read_palette_png(masks / task / f"{stem}.png")
                assert np.array_equal(labels, expected[task])
                assert [tuple(c) for c in palette[:3]] == list(seg.palette_of(task)[:3])
            # The overlay (alpha 1: colours only) shows the geometric head in its palette:
            # each pixel's nearest geometric colour is its label but near JPEG-blurred edges.
            overlay = cv2.imread(str(out / f"{stem}.jpg")).astype(np.int32)[..., ::-1]
            palette = np.asarray(GEOMETRIC_PALETTE, np.int32)
            nearest = ((overlay[..., None, :] - palette) ** 2).sum(-1).argmin(-1)
            assert (nearest == expected["geometric"]).mean() >= 0.95
            assert np.median(np.abs(overlay - palette[nearest])) <= 2  # not merely nearest
    assert len(np.unique(expected["geometric"])) > 1  # the palette check can fail


def test_one_image_to_a_png_is_the_exact_palette(model, images, tmp_path):
    rgb, depth, arrays = images
    out = tmp_path / "one.png"
    assert _run(model, rgb / "a.png", "--depth", str(depth), "--head", "geometric",
                "--alpha", "1", "--output", str(out)) == 0
    with Segmenter(model) as seg:
        labels = seg(arrays["a"][0], depth=arrays["a"][1])["geometric"]
    expected = np.asarray(GEOMETRIC_PALETTE, np.uint8)[labels][..., ::-1]
    assert np.array_equal(cv2.imread(str(out)), expected)
    assert _run(model, rgb / "a.png", "--depth", str(depth), "--alpha", "1",
                "--output", str(out)) == 0  # default: the first head, semantic
    assert not np.array_equal(cv2.imread(str(out)), expected)


@pytest.mark.parametrize("args,message", [
    ((), r"takes rgb \+ depth: pass --depth DIR, a folder of 16-bit depth PNGs"),
    (("--depth", "{depth}", "--head", "depth"), "--head depth: .* has no such head; its tasks "
                                                "are semantic, geometric"),
    (("--depth", "{missing}"), "--depth .*missing: no such folder"),
])
def test_rgbd_runs_without_what_they_need_say_so_in_one_line(model, images, tmp_path, capsys,
                                                             args, message):
    rgb, depth, _ = images
    args = [a.format(depth=depth, missing=tmp_path / "missing") for a in args]
    assert _run(model, rgb, *args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(message, err), err


def test_depth_for_videos_cameras_and_plain_models_is_refused(model, images, tmp_path, capsys,
                                                              onnx_artifact):
    rgb, depth, _ = images
    video = write_video(tmp_path / "in.mp4", [np.zeros((40, 56, 3), np.uint8)] * 3)
    assert _run(model, video, "--depth", str(depth)) == 1
    assert "--depth works only with image sources" in capsys.readouterr().err
    assert main(["run", "--camera", "0", "--model", str(model), "--depth", str(depth)]) == 1
    assert "not cameras or streams" in capsys.readouterr().err
    plain = onnx_artifact("rawio_argmax")
    assert _run(plain, rgb, "--depth", str(depth)) == 1
    assert "takes only rgb: leave --depth out" in capsys.readouterr().err
    assert _run(plain, rgb, "--head", "geometric") == 1
    assert "has one task" in capsys.readouterr().err


def test_depth_files_are_matched_by_stem_and_checked(images, tmp_path):
    rgb, depth, arrays = images
    paths = sorted(rgb.iterdir())
    assert {p.stem: q.name for p, q in match_files(paths, depth, "depth").items()} == {
        s: f"{s}.png" for s in STEMS}
    partial = tmp_path / "partial"
    write_depth_png(partial / "a.png", arrays["a"][1])
    with pytest.raises(InputError, match=r"no depth for b10.png, b2.png .*b10.png\)"):
        match_files(paths, partial, "depth")
    assert np.array_equal(read_depth(depth / "a.png"), arrays["a"][1])
    cv2.imwrite(str(tmp_path / "eight.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match="16-bit single-channel.*uint8"):
        read_depth(tmp_path / "eight.png")
    small = tmp_path / "small"
    for stem in STEMS:
        write_depth_png(small / f"{stem}.png", np.ones((20, 28), np.uint16))
    source = with_extras(open_source(rgb), {"depth": small})
    with pytest.raises(InputError, match="depth is 20×28 but a.png is 40×56"):
        next(iter(source))
    frame = next(iter(with_extras(open_source(rgb), {"depth": depth})))
    assert frame.name == "a" and np.array_equal(frame.extras["depth"], arrays["a"][1])


def test_an_rgb_hha_model_runs_with_hha_pngs_in_file_channel_order(images, tmp_path, capsys):
    rgb, _, arrays = images
    checkpoint = make_multi_checkpoint(tmp_path / "hha.pt", inputs=(("rgb", 3), ("hha", 3)),
                                       heads=(), fusion="late")
    model = export_artifact(checkpoint, tmp_path, argmax=True)
    hha = {stem: np.ascontiguousarray(frame[:, ::-1]) for stem, (frame, _) in arrays.items()}
    (tmp_path / "hha").mkdir()
    for stem, image in hha.items():  # channels in file order: OpenCV writes BGR reversed
        assert cv2.imwrite(str(tmp_path / "hha" / f"{stem}.png"), image[..., ::-1])
    assert np.array_equal(read_hha(tmp_path / "hha" / "a.png"), hha["a"])
    masks = tmp_path / "masks"
    assert _run(model, rgb, "--hha", str(tmp_path / "hha"), "--save-masks", str(masks)) == 0
    with Segmenter(model) as seg:
        for stem, (frame, _) in arrays.items():
            expected = seg(frame, hha=hha[stem])
            assert np.array_equal(read_palette_png(masks / f"{stem}.png")[0], expected)
            swapped = seg(frame, hha=np.ascontiguousarray(hha[stem][..., ::-1]))
            assert not np.array_equal(swapped, expected)  # the channel order is checked
    capsys.readouterr()
    assert _run(model, rgb) == 1
    assert r"takes rgb + hha: pass --hha DIR, a folder of 8-bit HHA PNGs" in \
        capsys.readouterr().err


def test_the_run_modules_do_not_import_torch():
    root = Path(__file__).resolve().parents[2]
    code = ("import sys, fcn_edge.runtime.paired, fcn_edge.runtime.run, "
            "fcn_edge.runtime.pipeline; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "False"
