"""NYUDv2 in the FCN reference layout (data/{images,depth,hha}/img_<id>.png,
segmentation/img_<id>.mat, <split>.txt), and the HHA encoding of depth."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fcn_edge.data.nyud import (NYU_CX, NYU_CY, NYU_FX, NYU_FY, NYUD_CLASSES,
                                NYUDv2Segmentation, hha_from_depth, locate_nyud,
                                read_nyud_depth)
from fcn_edge.errors import InputError
from support import write_gray, write_rgb

H, W = 48, 64
IDS = ("5001", "5002", "5003", "5004")


def _rgb(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _raw_labels(seed: int) -> np.ndarray:
    """Raw .mat labels: blocks of 0 (void), 1, 2, 21 and 40."""
    rng = np.random.default_rng(seed)
    blocks = rng.permutation(np.resize(np.array([0, 1, 2, 21, 40], np.uint8), 12)).reshape(3, 4)
    return cv2.resize(blocks, (W, H), interpolation=cv2.INTER_NEAREST)


def _depth_mm(seed: int) -> np.ndarray:
    """A wall 1.5..3 m away sloping left to right, a hole of missing depth."""
    depth = np.tile(np.linspace(1500, 3000, W), (H, 1)).astype(np.uint16) + np.uint16(seed)
    depth[5:9, 10:14] = 0
    return depth


def _savemat(path: Path, labels: np.ndarray, key: str = "segmentation") -> None:
    savemat = pytest.importorskip("scipy.io").savemat
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {key: labels})


@pytest.fixture
def nyud(tmp_path: Path) -> dict:
    """Four images in the reference layout; train.txt lists three, test.txt one."""
    root = tmp_path / "nyud"
    data = {"root": root, "images": {}, "labels": {}, "depth": {}}
    for i, idx in enumerate(IDS):
        name = f"img_{idx}"
        data["images"][name], data["labels"][name] = _rgb(i), _raw_labels(i)
        data["depth"][name] = _depth_mm(i)
        write_rgb(root / "data" / "images" / f"{name}.png", data["images"][name])
        write_gray(root / "data" / "depth" / f"{name}.png", data["depth"][name])
        _savemat(root / "segmentation" / f"{name}.mat", data["labels"][name])
    (root / "train.txt").write_text("5003\n5001\n5002\n")
    (root / "test.txt").write_text("5004\n")
    return data


def _expected_mask(raw: np.ndarray) -> np.ndarray:
    return np.where(raw == 0, 255, raw.astype(np.int64) - 1).astype(np.uint8)


def test_classes_are_gupta_40():
    assert len(NYUD_CLASSES) == 40 and len(set(NYUD_CLASSES)) == 40
    assert NYUD_CLASSES[:3] == ("wall", "floor", "cabinet")
    assert NYUD_CLASSES[-3:] == ("otherstructure", "otherfurniture", "otherprop")


def test_locate_nyud(nyud, tmp_path):
    assert locate_nyud(nyud["root"]) == nyud["root"]
    assert locate_nyud(tmp_path) == nyud["root"]  # the directory holding nyud/
    assert locate_nyud(nyud["root"] / "data") is None
    (tmp_path / "other" / "data" / "images").mkdir(parents=True)
    assert locate_nyud(tmp_path / "other") is None  # no segmentation/
    from fcn_edge.data import detect_layout, open_dataset

    assert detect_layout(nyud["root"]) == "nyud"
    opened = open_dataset(nyud["root"], "train", modality="rgbd")
    assert opened.layout == "nyud" and "depth" in opened[0].inputs


def test_rgb_samples_labels_and_split_order(nyud):
    ds = NYUDv2Segmentation(nyud["root"], "train")
    assert ds.layout == "nyud" and ds.num_classes == 40 and ds.split == "train"
    assert ds.names == ("img_5003", "img_5001", "img_5002")  # the split file's order
    for sample in ds:
        assert sample.image.dtype == np.uint8 and sample.image.shape == (H, W, 3)
        assert np.array_equal(sample.image, nyud["images"][sample.name])
        raw = nyud["labels"][sample.name]
        assert sample.mask.dtype == np.uint8
        assert np.array_equal(sample.mask, _expected_mask(raw))
        assert set(np.unique(sample.mask)) == {0, 1, 20, 39, 255}
        assert (sample.mask[raw == 0] == 255).all() and (sample.mask[raw == 40] == 39).all()
        assert sample.inputs is None
        assert sample.masks is not None and sample.masks["semantic"] is sample.mask
    test = NYUDv2Segmentation(nyud["root"], "test")
    assert test.names == ("img_5004",)


def test_rgbd_depth_in_metres(nyud):
    sample = NYUDv2Segmentation(nyud["root"], "test", modality="rgbd")[0]
    depth = sample.inputs["depth"]
    assert set(sample.inputs) == {"depth"} and depth.dtype == np.float32
    assert depth.shape == (H, W)
    np.testing.assert_allclose(depth, nyud["depth"]["img_5004"] / 1000.0, rtol=1e-6)
    assert depth[6, 11] == 0 and 1.5 <= depth[0, 0] < 1.51 and 3.0 <= depth[0, -1] < 3.01
    assert np.array_equal(sample.image, nyud["images"]["img_5004"])


def test_hha_computed_from_depth_when_no_hha_folder(nyud):
    ds = NYUDv2Segmentation(nyud["root"], "test", modality="rgb+hha")
    assert ds.hha_source == "depth"
    sample = ds[0]
    expected = hha_from_depth(nyud["depth"]["img_5004"] / 1000.0)
    assert set(sample.inputs) == {"hha"} and sample.inputs["hha"].dtype == np.uint8
    assert sample.inputs["hha"].shape == (H, W, 3)
    assert np.array_equal(sample.inputs["hha"], expected)
    assert (sample.inputs["hha"][6, 11] == 0).all()  # the hole
    assert np.array_equal(sample.image, nyud["images"]["img_5004"])


def test_hha_read_from_files_in_channel_order(nyud):
    hha = np.zeros((H, W, 3), np.uint8)
    hha[..., 0], hha[..., 1], hha[..., 2] = 10, 20, 30  # disparity, height, angle
    for name in nyud["images"]:
        write_rgb(nyud["root"] / "data" / "hha" / f"{name}.png", hha)
    ds = NYUDv2Segmentation(nyud["root"], "train", modality="hha")
    assert ds.hha_source == "files"
    sample = ds[1]
    assert np.array_equal(sample.inputs["hha"], hha)
    assert np.array_equal(sample.image, nyud["images"]["img_5001"])  # image stays the RGB
    assert np.array_equal(sample.mask, _expected_mask(nyud["labels"]["img_5001"]))


def test_split_file_is_honoured_and_missing_split_named(nyud):
    (nyud["root"] / "val.txt").write_text("img_5002\n")  # an img_ prefix is accepted too
    assert NYUDv2Segmentation(nyud["root"], "val").names == ("img_5002",)
    custom = nyud["root"].parent / "mine.txt"
    custom.write_text("5004\n5001\n")
    assert NYUDv2Segmentation(nyud["root"], custom).names == ("img_5004", "img_5001")
    with pytest.raises(InputError, match=r"no split 'trainval': looked for trainval\.txt in "
                                         r".*nyud; splits found: test, train, val"):
        NYUDv2Segmentation(nyud["root"], "trainval")


def test_missing_depth_file_is_named(nyud):
    (nyud["root"] / "data" / "depth" / "img_5001.png").unlink()
    NYUDv2Segmentation(nyud["root"], "train")  # rgb does not need depth
    for modality in ("rgbd", "hha"):
        with pytest.raises(InputError, match=r"data/depth/img_5001\.png: file is missing; "
                                             r"listed in .*train\.txt"):
            NYUDv2Segmentation(nyud["root"], "train", modality=modality)


def test_missing_label_and_hha_files_are_named(nyud):
    (nyud["root"] / "data" / "hha").mkdir()
    with pytest.raises(InputError, match=r"data/hha/img_5004\.png: file is missing"):
        NYUDv2Segmentation(nyud["root"], "test", modality="hha")
    (nyud["root"] / "segmentation" / "img_5004.mat").unlink()
    with pytest.raises(InputError, match=r"segmentation/img_5004\.mat: file is missing"):
        NYUDv2Segmentation(nyud["root"], "test")


def test_size_mismatches_name_the_files(nyud):
    write_gray(nyud["root"] / "data" / "depth" / "img_5004.png",
                np.full((H, W - 1), 2000, np.uint16))
    ds = NYUDv2Segmentation(nyud["root"], "test", modality="rgbd")
    with pytest.raises(InputError, match=r"img_5004\.png: depth is 48×63 but its image "
                                         r".*images/img_5004\.png is 48×64"):
        ds[0]
    _savemat(nyud["root"] / "segmentation" / "img_5004.mat", np.ones((H - 2, W), np.uint8))
    with pytest.raises(InputError, match=r"img_5004\.mat: mask is 46×64 but its image"):
        NYUDv2Segmentation(nyud["root"], "test")[0]


def test_label_41_and_bad_mat_are_refused(nyud):
    raw = nyud["labels"]["img_5004"].copy()
    raw[3, 3] = 41
    _savemat(nyud["root"] / "segmentation" / "img_5004.mat", raw)
    with pytest.raises(InputError, match=r"img_5004\.mat: label values 41 are outside 0\.\.40"):
        NYUDv2Segmentation(nyud["root"], "test")[0]
    _savemat(nyud["root"] / "segmentation" / "img_5004.mat", raw, key="labels")
    with pytest.raises(InputError, match=r"img_5004\.mat: no variable 'segmentation' "
                                         r"\(variables: labels\)"):
        NYUDv2Segmentation(nyud["root"], "test")[0]


def test_float_labels_from_matlab_doubles_are_accepted(nyud):
    raw = nyud["labels"]["img_5004"]
    _savemat(nyud["root"] / "segmentation" / "img_5004.mat", raw.astype(np.float64))
    assert np.array_equal(NYUDv2Segmentation(nyud["root"], "test")[0].mask, _expected_mask(raw))


def test_unknown_modality_and_non_nyud_root(nyud, tmp_path):
    with pytest.raises(InputError, match=r"unknown NYUDv2 modality 'depth'; choose one of "
                                         r"rgb, rgbd, hha, rgb\+hha"):
        NYUDv2Segmentation(nyud["root"], modality="depth")
    with pytest.raises(InputError, match=r"not an NYUDv2 directory: needs data/images/"):
        NYUDv2Segmentation(tmp_path / "nothing")


def test_8bit_depth_is_refused(nyud):
    write_gray(nyud["root"] / "data" / "depth" / "img_5004.png", np.full((H, W), 20, np.uint8))
    with pytest.raises(InputError, match=r"img_5004\.png: depth must be a 16-bit "
                                         r"single-channel image in millimetres, got 1 "
                                         r"channel of uint8"):
        read_nyud_depth(nyud["root"] / "data" / "depth" / "img_5004.png")


# --- hha_from_depth on synthetic planes -------------------------------------------------------

F, CX, CY = 50.0, 31.5, -10.0  # a principal point above the image: every row sees the floor
CAMERA_HEIGHT = 1.2


def _floor_depth() -> np.ndarray:
    """Depth (m) of a level floor 1.2 m below an upright camera: z = 1.2 f / (v - cy)."""
    v = np.arange(H, dtype=np.float64)[:, None]
    return np.repeat(CAMERA_HEIGHT * F / (v - CY), W, axis=1)


def test_floor_plane_is_horizontal_with_constant_height():
    depth = _floor_depth()
    hha = hha_from_depth(depth, F, F, CX, CY)
    assert hha.dtype == np.uint8 and hha.shape == (H, W, 3)
    assert (hha[..., 2] == 38).all()  # angle 0° with "up", + 38
    assert (hha[..., 1] == 0).all()   # every floor point at the lowest height
    expected = np.clip(np.rint(31000 / np.maximum(depth * 100, 100)), 0, 255)
    assert np.array_equal(hha[..., 0], expected.astype(np.uint8))
    assert hha[0, 0, 0] < hha[-1, 0, 0]  # nearer rows (bottom) have larger disparity


def test_wall_plane_is_vertical_and_height_grows_upwards():
    depth = np.full((H, W), 2.0)
    hha = hha_from_depth(depth, F, F, CX, CY)
    assert (hha[..., 2] == 128).all()  # 90° + 38
    assert (hha[..., 0] == 155).all()  # 31000 / 200 cm
    expected_height = np.rint((H - 1 - np.arange(H)) * 200 / F)  # cm above the bottom row
    assert np.array_equal(hha[:, 5, 1], expected_height.astype(np.uint8))
    assert hha[-1, 5, 1] == 0 and hha[0, 5, 1] == 188


def test_ceiling_differs_from_floor():
    hha = hha_from_depth(_floor_depth()[::-1], F, F, CX, H - 1 - CY)  # mirrored: a ceiling
    assert (hha[..., 2] == 218).all()  # 180° + 38


def test_invalid_depth_gives_zero_and_does_not_spoil_neighbours():
    depth = _floor_depth()
    depth[10:14, 20:30] = 0
    depth[30, 40] = np.nan
    hha = hha_from_depth(depth, F, F, CX, CY)
    assert (hha[10:14, 20:30] == 0).all() and (hha[30, 40] == 0).all()
    valid = np.ones((H, W), bool)
    valid[10:14, 20:30] = False
    valid[30, 40] = False
    assert (hha[..., 2][valid] == 38).all()  # one-sided differences beside the holes
    assert (hha[..., 0][valid] > 0).all()
    assert not hha_from_depth(np.zeros((H, W))).any()


def test_default_intrinsics_are_nyu_kinect_and_bad_input_refused():
    assert (NYU_FX, NYU_FY) == pytest.approx((518.858, 519.470), abs=1e-3)
    assert (NYU_CX, NYU_CY) == pytest.approx((324.582, 252.736), abs=1e-3)  # 0-based
    hha = hha_from_depth(np.full((480, 640), 3.0))
    assert (hha[..., 2] == 128).all() and (hha[..., 0] == 103).all()  # 31000 / 300
    with pytest.raises(InputError, match="H×W array of metres"):
        hha_from_depth(np.ones((4, 4, 3)))
    with pytest.raises(InputError, match="focal lengths must be positive"):
        hha_from_depth(np.ones((4, 4)), fx=0)
