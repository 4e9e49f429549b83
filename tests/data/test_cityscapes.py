"""Cityscapes: labelIds → the 19 trainIds with the official table."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fcn_edge.data import CITYSCAPES_CLASSES, CityscapesSegmentation, detect_layout, open_dataset
from fcn_edge.data.classes import CITYSCAPES_PALETTE, cityscapes_label_map
from fcn_edge.errors import InputError


def test_label_ids_map_to_train_ids(make_cityscapes):
    city = make_cityscapes()
    assert detect_layout(city["root"]) == "cityscapes"
    ds = open_dataset(city["root"], "train")
    assert isinstance(ds, CityscapesSegmentation) and ds.layout == "cityscapes"
    assert ds.names == ("aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000019")
    sample = ds[2]
    raw = city["masks"][sample.name]
    expected = {0: 255, 4: 255, 7: 0, 8: 1, 11: 2, 17: 5, 24: 11, 26: 13, 33: 18, 29: 255}
    for label_id, train_id in expected.items():
        assert (sample.mask[raw == label_id] == train_id).all(), label_id
    assert sample.image.shape == (24, 32, 3)


def test_classes_palette_and_table():
    assert CITYSCAPES_CLASSES[0] == "road" and CITYSCAPES_CLASSES[13] == "car"
    assert len(CITYSCAPES_CLASSES) == 19 and CITYSCAPES_CLASSES[-1] == "bicycle"
    assert CITYSCAPES_PALETTE.shape == (19, 3)
    assert tuple(CITYSCAPES_PALETTE[0]) == (128, 64, 128)
    assert tuple(CITYSCAPES_PALETTE[13]) == (0, 0, 142)
    table = cityscapes_label_map()
    assert (table[[7, 26, 0, 33]] == [0, 13, 255, 18]).all()
    # cityscapesScripts labels.py, (name, id, trainId) of every evaluated class:
    official = {"road": 7, "sidewalk": 8, "building": 11, "wall": 12, "fence": 13, "pole": 17,
                "traffic light": 19, "traffic sign": 20, "vegetation": 21, "terrain": 22,
                "sky": 23, "person": 24, "rider": 25, "car": 26, "truck": 27, "bus": 28,
                "train": 31, "motorcycle": 32, "bicycle": 33}
    for train_id, name in enumerate(CITYSCAPES_CLASSES):
        assert table[official[name]] == train_id, name
    assert (table < 19).sum() == 19 and (table[34:] == 255).all()


def test_unknown_split_lists_the_splits(make_cityscapes):
    city = make_cityscapes()
    with pytest.raises(InputError, match=r"leftImg8bit/val: no such Cityscapes split "
                                         r"\(splits found: train\)"):
        open_dataset(city["root"], "val")


def test_missing_annotation_is_named(make_cityscapes):
    city = make_cityscapes()
    path = city["root"] / "gtFine/train/bochum/bochum_000000_000019_gtFine_labelIds.png"
    path.unlink()
    with pytest.raises(InputError, match=r"bochum_000000_000019_gtFine_labelIds\.png: file is "
                                         r"missing"):
        open_dataset(city["root"])


def test_train_id_files_are_refused(make_cityscapes):
    city = make_cityscapes()
    path = city["root"] / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    cv2.imwrite(str(path), np.full((24, 32), 255, np.uint8))  # looks like labelTrainIds
    with pytest.raises(InputError, match=r"aachen_000000_000019_gtFine_labelIds\.png: label "
                                         r"value 255 is not a Cityscapes labelId"):
        open_dataset(city["root"])[0]


def test_unknown_annotation_kind(make_cityscapes):
    city = make_cityscapes()
    with pytest.raises(InputError, match="annotations must be one of gtFine, gtCoarse"):
        open_dataset(city["root"], annotations="gtMedium")
