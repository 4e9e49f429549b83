"""SIFT Flow in the FCN reference's layout: Images/, SemanticLabels/, GeoLabels/ + <split>.txt."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fcn_edge.data import layouts
from fcn_edge.data.base import Sample
from fcn_edge.data.classes import voc_palette
from fcn_edge.data.siftflow import (SIFTFLOW_ABSENT_FROM_TEST, SIFTFLOW_CLASSES,
                                    SIFTFLOW_GEOMETRIC_CLASSES, SIFTFLOW_SUBDIR,
                                    SIFTFlowSegmentation, locate_siftflow, read_siftflow_labels)
from fcn_edge.errors import InputError
from support import smooth_image, write_rgb

savemat = pytest.importorskip("scipy.io").savemat  # scipy: the 'train' extra

H, W = 32, 40
# File order, not sorted order, so a reader that sorts ids would be caught.
TRAINVAL = ("street_bost64", "coast_arnat59", "forest_for121")
TEST = ("tallbuilding_a812069",)


def _raw(seed: int, values: tuple[int, ...], h: int = H, w: int = W) -> np.ndarray:
    """Raw SIFT Flow labels (int32, as signed as GeoLabels' -1 needs): every value appears."""
    rng = np.random.default_rng(seed)
    grid = rng.permutation(np.resize(np.asarray(values, np.int32), 20)).reshape(4, 5)
    return np.kron(grid, np.ones((h // 4, w // 5), np.int32))


def _reference_mapping(raw: np.ndarray) -> np.ndarray:
    """siftflow_layers.py's load_label, written out: -1 → 0, cast to uint8, minus 1."""
    label = raw.copy()
    label[label == -1] = 0
    label = label.astype(np.uint8)
    label -= 1
    return label


def _folder(root: Path, kind: str) -> Path:
    return root / kind / SIFTFLOW_SUBDIR


@pytest.fixture
def make_siftflow(tmp_path: Path):
    """The reference layout; returns {"root", "images", "semantic", "geometric"} (raw labels)."""
    def make(nested: bool = False) -> dict:
        root = tmp_path / "siftflow"
        base = root / "SiftFlowDataset" if nested else root
        for kind in ("Images", "SemanticLabels", "GeoLabels"):
            _folder(base, kind).mkdir(parents=True)
        images, semantic, geometric = {}, {}, {}
        for i, name in enumerate(TRAINVAL + TEST):
            images[name] = smooth_image(i, H, W)
            semantic[name] = _raw(i, (0, 1, 6, 28, 32, 33))
            geometric[name] = _raw(100 + i, (-1, 0, 1, 2, 3))
            write_rgb(_folder(base, "Images") / f"{name}.jpg", images[name])
            savemat(_folder(base, "SemanticLabels") / f"{name}.mat", {"S": semantic[name]})
            savemat(_folder(base, "GeoLabels") / f"{name}.mat", {"S": geometric[name]})
        (base / "trainval.txt").write_text("".join(f"{n}\n" for n in TRAINVAL))
        (base / "test.txt").write_text("".join(f"{n}\n" for n in TEST))
        return {"root": root, "base": base, "images": images, "semantic": semantic,
                "geometric": geometric}
    return make


@pytest.fixture
def registered(monkeypatch):
    """The Layout entry proposed for layouts.LAYOUTS (a no-op once it is registered)."""
    monkeypatch.setitem(layouts.LAYOUTS, "siftflow", layouts.Layout(
        locate_siftflow, f"Images/, SemanticLabels/ and GeoLabels/ each with "
        f"{SIFTFLOW_SUBDIR}/<id>.jpg|.mat, and <split>.txt (trainval, test)",
        SIFTFlowSegmentation))


def test_locate_and_detect(make_siftflow, registered, tmp_path):
    sf = make_siftflow()
    assert locate_siftflow(sf["root"]) == sf["root"]
    assert layouts.detect_layout(sf["root"]) == "siftflow"
    ds = layouts.open_dataset(sf["root"], "test")
    assert isinstance(ds, SIFTFlowSegmentation) and ds.layout == "siftflow"
    assert ds.names == TEST and ds.split == "test"
    assert locate_siftflow(tmp_path) is None


def test_nested_zip_folder_and_missing_labels_folder(make_siftflow):
    sf = make_siftflow(nested=True)
    assert locate_siftflow(sf["root"]) == sf["base"]
    assert SIFTFlowSegmentation(sf["root"]).root == sf["base"]
    for path in _folder(sf["base"], "GeoLabels").iterdir():
        path.unlink()
    _folder(sf["base"], "GeoLabels").rmdir()
    assert locate_siftflow(sf["root"]) is None
    with pytest.raises(InputError, match=r"not a SIFT Flow directory: needs Images/, "
                                         r"SemanticLabels/ and GeoLabels/"):
        SIFTFlowSegmentation(sf["root"])


def test_split_files_are_honoured(make_siftflow, tmp_path):
    sf = make_siftflow()
    ds = SIFTFlowSegmentation(sf["root"])
    assert ds.split == "trainval" and ds.split_file == sf["root"] / "trainval.txt"
    assert ds.names == TRAINVAL and len(ds) == 3
    assert SIFTFlowSegmentation(sf["root"], "test").names == TEST
    custom = tmp_path / "two.txt"
    custom.write_text("forest_for121\ntallbuilding_a812069\n")
    assert SIFTFlowSegmentation(sf["root"], custom).names == ("forest_for121",
                                                              "tallbuilding_a812069")
    with pytest.raises(InputError, match=r"no split 'val': looked for val\.txt .*splits found: "
                                         r"test, trainval .*fcn\.berkeleyvision\.org"):
        SIFTFlowSegmentation(sf["root"], "val")


def test_sample_contents_and_dtypes(make_siftflow):
    sf = make_siftflow()
    ds = SIFTFlowSegmentation(sf["root"])
    for i, sample in enumerate(ds):
        assert isinstance(sample, Sample) and sample.name == TRAINVAL[i]
        assert sample.image.shape == (H, W, 3) and sample.image.dtype == np.uint8
        # RGB order, not BGR: JPEG moves a smooth image by a few levels at most.
        error = np.abs(sample.image.astype(int) - sf["images"][sample.name].astype(int))
        assert error.mean() < 3
        assert sample.inputs is None and set(sample.masks) == {"semantic", "geometric"}
        for mask in sample.masks.values():
            assert mask.shape == (H, W) and mask.dtype == np.uint8
        assert np.array_equal(sample.mask, sample.masks["semantic"])
        assert np.array_equal(sample.mask, _reference_mapping(sf["semantic"][sample.name]))
        assert np.array_equal(sample.masks["geometric"],
                              _reference_mapping(sf["geometric"][sample.name]))
    assert ds[-1].name == TRAINVAL[-1]
    with pytest.raises(IndexError):
        ds[3]


def test_label_mappings(make_siftflow):
    sf = make_siftflow()
    name = TRAINVAL[0]
    sample = SIFTFlowSegmentation(sf["root"])[0]
    sem, geo = sf["semantic"][name], sf["geometric"][name]
    # semantic: 0 unlabeled → 255, k → k-1
    assert (sample.mask[sem == 0] == 255).all()
    assert (sample.mask[sem == 1] == 0).all() and (sample.mask[sem == 33] == 32).all()
    assert (sample.mask[sem == 28] == 27).all() and SIFTFLOW_CLASSES[27] == "sky"
    assert set(np.unique(sample.mask)) == {0, 5, 27, 31, 32, 255}
    # geometric: -1 and 0 void → 255, 1 sky → 0, 2 horizontal → 1, 3 vertical → 2
    g = sample.masks["geometric"]
    assert (g[geo == -1] == 255).all() and (g[geo == 0] == 255).all()
    assert (g[geo == 1] == 0).all() and (g[geo == 2] == 1).all() and (g[geo == 3] == 2).all()
    assert set(np.unique(g)) == {0, 1, 2, 255}


def test_matlab_double_labels_are_read(tmp_path):
    raw = np.array([[0, 1, 33], [12, 2, 0]], np.float64)  # MATLAB's default class
    savemat(tmp_path / "s.mat", {"S": raw})
    assert read_siftflow_labels(tmp_path / "s.mat", "semantic").tolist() == [
        [255, 0, 32], [11, 1, 255]]
    savemat(tmp_path / "g.mat", {"S": np.array([[-1, 0, 1, 2, 3]], np.int16)})
    assert read_siftflow_labels(tmp_path / "g.mat", "geometric").tolist() == [
        [255, 255, 0, 1, 2]]


def test_tasks_classes_and_palettes(make_siftflow):
    ds = SIFTFlowSegmentation(make_siftflow()["root"])
    assert ds.tasks == {"semantic": SIFTFLOW_CLASSES, "geometric": SIFTFLOW_GEOMETRIC_CLASSES}
    assert ds.classes == SIFTFLOW_CLASSES and ds.num_classes == 33 and ds.ignore_index == 255
    assert len(set(SIFTFLOW_CLASSES)) == 33
    assert SIFTFLOW_CLASSES[:3] == ("awning", "balcony", "bird")
    assert SIFTFLOW_CLASSES[-3:] == ("sun", "tree", "window")
    assert SIFTFLOW_GEOMETRIC_CLASSES == ("sky", "horizontal", "vertical")
    assert set(SIFTFLOW_ABSENT_FROM_TEST) <= set(SIFTFLOW_CLASSES)
    assert np.array_equal(ds.palette, voc_palette(256))
    assert set(ds.palettes) == set(ds.tasks)
    assert all(np.array_equal(p, voc_palette(256)) for p in ds.palettes.values())


@pytest.mark.parametrize("kind, suffix", [("Images", ".jpg"), ("SemanticLabels", ".mat"),
                                          ("GeoLabels", ".mat")])
def test_missing_file_is_named(make_siftflow, kind, suffix):
    sf = make_siftflow()
    (_folder(sf["root"], kind) / f"coast_arnat59{suffix}").unlink()
    with pytest.raises(InputError, match=rf"{kind}/{SIFTFLOW_SUBDIR}/coast_arnat59\{suffix}: "
                                         r"file is missing; listed in .*trainval\.txt"):
        SIFTFlowSegmentation(sf["root"])
    assert SIFTFlowSegmentation(sf["root"], "test").names == TEST  # other splits still open


@pytest.mark.parametrize("kind", ["SemanticLabels", "GeoLabels"])
def test_label_size_differing_from_image(make_siftflow, kind):
    sf = make_siftflow()
    savemat(_folder(sf["root"], kind) / "forest_for121.mat",
            {"S": np.ones((H, W - 8), np.int32)})
    ds = SIFTFlowSegmentation(sf["root"])
    ds[0], ds[1]  # the others still read
    with pytest.raises(InputError, match=rf"{kind}/{SIFTFLOW_SUBDIR}/forest_for121\.mat: mask "
                                         rf"is {H}×{W - 8} but its image .*forest_for121\.jpg "
                                         rf"is {H}×{W}"):
        ds[2]


@pytest.mark.parametrize("kind, value, message", [
    ("SemanticLabels", 34, r"semantic label values -1, 34 are outside 0\.\.33"),
    ("GeoLabels", 4, r"geometric label values -2, 4 are outside -1\.\.3")])
def test_labels_out_of_range(make_siftflow, kind, value, message):
    sf = make_siftflow()
    raw = (sf["semantic"] if kind == "SemanticLabels" else sf["geometric"])["coast_arnat59"]
    raw = raw.copy()
    raw[0, 0], raw[5, 5] = value, -1 if value == 34 else -2
    savemat(_folder(sf["root"], kind) / "coast_arnat59.mat", {"S": raw})
    with pytest.raises(InputError, match=rf"coast_arnat59\.mat: {message}"):
        SIFTFlowSegmentation(sf["root"])[1]


def test_mat_without_s_or_unreadable(make_siftflow, tmp_path):
    sf = make_siftflow()
    path = _folder(sf["root"], "GeoLabels") / "street_bost64.mat"
    savemat(path, {"L": sf["geometric"]["street_bost64"]})
    with pytest.raises(InputError, match=r"street_bost64\.mat: no variable 'S' holding the "
                                         r"geometric labels \(variables: L\)"):
        SIFTFlowSegmentation(sf["root"])[0]
    (tmp_path / "junk.mat").write_bytes(b"MATLAB? no")
    with pytest.raises(InputError, match=r"junk\.mat: unreadable MATLAB file"):
        read_siftflow_labels(tmp_path / "junk.mat", "semantic")
    savemat(tmp_path / "frac.mat", {"S": np.array([[0.5, 1.0]])})
    with pytest.raises(InputError, match=r"frac\.mat: 'S' must be an H×W map of integer labels"):
        read_siftflow_labels(tmp_path / "frac.mat", "semantic")
    with pytest.raises(InputError, match=r"unknown SIFT Flow task 'depth'"):
        read_siftflow_labels(tmp_path / "frac.mat", "depth")
