"""detect_layout / open_dataset: dispatch, and clear errors for everything unrecognised."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from fcn_edge.data import LAYOUTS, ProceduralScenes, detect_layout, open_dataset
from fcn_edge.errors import InputError


def test_each_fixture_is_detected(make_voc, make_sbd, make_cityscapes, make_folder):
    found = {detect_layout(make()["root"]) for make in (make_voc, make_sbd, make_cityscapes,
                                                        make_folder)}
    assert found == {"voc", "sbd", "cityscapes", "folder"}
    # nyud and siftflow are detected from their own fixtures in test_nyud.py / test_siftflow.py
    assert set(LAYOUTS) == found | {"nyud", "siftflow"}


def test_synthetic_is_a_spec_not_a_path():
    assert detect_layout("synthetic") == "synthetic"
    scenes = open_dataset("synthetic", num_images=3, size=(40, 48), seed=0)
    assert isinstance(scenes, ProceduralScenes) and len(scenes) == 3 and scenes.seed == 0
    assert scenes[0].image.shape == (40, 48, 3)


def test_unknown_layout_lists_what_each_layout_needs(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(InputError) as info:
        detect_layout(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "unknown data set layout" in message
    for needed in ("JPEGImages/", "cls/*.mat", "leftImg8bit/", "images/ and masks/",
                   "synthetic"):
        assert needed in message


def test_missing_path_and_file_instead_of_directory(tmp_path):
    with pytest.raises(InputError, match=r"nowhere: no such data set directory"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "list.txt").write_text("x\n")
    with pytest.raises(InputError, match=r"list\.txt: a data set is a directory"):
        open_dataset(tmp_path / "list.txt")


def test_explicit_layout_and_unknown_names(make_folder):
    folder = make_folder()
    assert len(open_dataset(folder["root"], layout="folder")) == 3
    with pytest.raises(InputError, match=r"unknown layout 'coco'"):
        open_dataset(folder["root"], layout="coco")
    with pytest.raises(InputError, match=r"not a PASCAL VOC directory"):
        open_dataset(folder["root"], layout="voc")
    with pytest.raises(InputError, match=r"layout 'folder' has no option num_images "
                                         r"\(options: classes\)"):
        open_dataset(folder["root"], num_images=3)


def test_datasets_pickle_for_loader_workers(make_voc):
    scenes = ProceduralScenes(num_images=2, size=(32, 32), seed=9)
    copy = pickle.loads(pickle.dumps(scenes))
    assert np.array_equal(copy[1].image, scenes[1].image)
    voc = open_dataset(make_voc()["root"])
    assert np.array_equal(pickle.loads(pickle.dumps(voc))[0].mask, voc[0].mask)


@pytest.mark.parametrize("name", ["synthetic-rgbd", "synthetic-twotask"])
def test_procedural_multi_sets_open_by_name_with_the_synthetic_splits(name):
    from fcn_edge.data import SYNTHETIC_READERS, detect_layout, open_dataset

    assert detect_layout(name) == name
    val = open_dataset(name, "val", num_images=2, size=(32, 40))
    assert type(val) is SYNTHETIC_READERS[name] and val.split == "val"
    plain = open_dataset("synthetic", "val", num_images=2, size=(32, 40))
    sample, same = val[1], plain[1]
    assert np.array_equal(sample.image, same.image) and np.array_equal(sample.mask, same.mask)
    extra = sample.inputs if name == "synthetic-rgbd" else sample.masks
    assert extra and all(v.shape[:2] == (32, 40) for v in extra.values())
    with pytest.raises(InputError, match="splits"):
        open_dataset(name, "dev")
