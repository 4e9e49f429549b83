"""Generic image–mask folders: class names, splits, pairing by name."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fcn_edge.data import FolderSegmentation, detect_layout, open_dataset, voc_palette
from fcn_edge.errors import InputError


def test_classes_txt_and_grayscale_masks(make_folder):
    folder = make_folder(classes=("sky", "grass", "cow"))
    assert detect_layout(folder["root"]) == "folder"
    ds = open_dataset(folder["root"])
    assert isinstance(ds, FolderSegmentation) and ds.layout == "folder"
    assert ds.classes == ("sky", "grass", "cow") and ds.num_classes == 3
    assert np.array_equal(ds.palette, voc_palette(3))
    assert ds.names == ("a", "b", "c")
    for sample in ds:
        assert np.array_equal(sample.mask, folder["masks"][(None, sample.name)])
        assert sample.image.shape == (24, 32, 3)


def test_classes_inferred_from_the_largest_label(make_folder):
    folder = make_folder(values=(0, 4), palette_masks=True)
    ds = open_dataset(folder["root"])
    assert ds.classes == ("class_0", "class_1", "class_2", "class_3", "class_4")
    assert set(np.unique(ds[0].mask)) == {0, 4, 255}  # palette indices, not colours


def test_classes_option_wins(make_folder):
    folder = make_folder(classes=("x", "y", "z"))
    ds = open_dataset(folder["root"], classes=["p", "q", "r", "s"])
    assert ds.classes == ("p", "q", "r", "s")


def test_split_subfolders(make_folder):
    folder = make_folder(names=("u", "v"), splits=("train", "val"))
    train = open_dataset(folder["root"], "train")
    val = open_dataset(folder["root"], "val")
    assert train.root == val.root and train.split == "train" and len(val) == 2
    assert np.array_equal(val[1].mask, folder["masks"][("val", "v")])
    with pytest.raises(InputError, match=r"images: no split 'test' \(splits found: train, val\)"):
        open_dataset(folder["root"], "test")


def test_image_without_mask_and_mask_without_image(make_folder):
    folder = make_folder()
    (folder["root"] / "masks" / "b.png").unlink()
    with pytest.raises(InputError, match=r"masks/b\.png: file is missing"):
        open_dataset(folder["root"])
    (folder["root"] / "images" / "b.png").unlink()
    cv2.imwrite(str(folder["root"] / "masks" / "zz.png"), np.zeros((24, 32), np.uint8))
    with pytest.raises(InputError, match=r"zz\.png: mask without an image"):
        open_dataset(folder["root"])


def test_label_beyond_classes_txt_and_size_mismatch(make_folder):
    folder = make_folder(classes=("a", "b"))  # the masks use 0, 1 and 2
    ds = open_dataset(folder["root"])
    with pytest.raises(InputError, match=r"a\.png: label values 2 are outside the 2 classes"):
        ds[0]
    cv2.imwrite(str(folder["root"] / "masks" / "a.png"), np.zeros((32, 24), np.uint8))
    with pytest.raises(InputError, match=r"a\.png: mask is 32×24 but its image .*a\.png is "
                                         r"24×32"):
        open_dataset(folder["root"], classes=("a", "b", "c"))[0]


def test_empty_classes_txt(make_folder):
    folder = make_folder()
    (folder["root"] / "classes.txt").write_text("\n\n")
    with pytest.raises(InputError, match=r"classes\.txt: empty class list"):
        open_dataset(folder["root"])
