"""PASCAL VOC: the real layout, splits by name or file, write_voc round trip, bad data."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fcn_edge.data import (VOC_CLASSES, ProceduralScenes, VOCSegmentation, detect_layout,
                           open_dataset, voc_palette, write_palette_png, write_voc)
from fcn_edge.errors import InputError


def test_voc_fixture_loads_exact_masks_and_rgb_images(make_voc):
    voc = make_voc()
    ds = open_dataset(voc["root"], "train")
    assert isinstance(ds, VOCSegmentation) and ds.layout == "voc"
    assert ds.classes == VOC_CLASSES and ds.num_classes == 21 and ds.ignore_index == 255
    assert ds.palette.shape == (256, 3) and np.array_equal(ds.palette, voc_palette(256))
    assert ds.names == tuple(voc["masks"]) and len(ds) == 3
    for sample in ds:
        assert np.array_equal(sample.mask, voc["masks"][sample.name])  # indices, not colours
        assert set(np.unique(sample.mask)) == {0, 1, 15, 20, 255}
        expected = voc["images"][sample.name].astype(int)
        assert np.abs(sample.image.astype(int) - expected).mean() < 3  # JPEG, RGB order


def test_vocdevkit_nesting_and_split_file_path(make_voc, tmp_path):
    voc = make_voc(nested=True)
    assert detect_layout(voc["root"]) == "voc"
    ds = open_dataset(voc["root"])
    assert ds.root == voc["base"] and len(ds) == 3
    seg11valid = tmp_path / "seg11valid.txt"
    seg11valid.write_text("2008_000002\n\n2007_000032\n")  # blank lines are skipped
    subset = open_dataset(voc["root"], str(seg11valid))
    assert subset.names == ("2008_000002", "2007_000032") and subset.split == "seg11valid"
    assert np.array_equal(subset[0].mask, voc["masks"]["2008_000002"])


def test_write_voc_round_trip_keeps_masks_exact(tmp_path):
    scenes = ProceduralScenes(num_images=4, size=(64, 96), seed=2)
    root = write_voc(scenes, tmp_path / "exported", split="train")
    assert root == tmp_path / "exported"
    assert (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split() == [
        s.name for s in scenes]
    assert detect_layout(root) == "voc"
    back = open_dataset(root, "train")
    assert back.classes == scenes.classes and len(back) == 4  # classes.txt keeps the names
    for original, read in zip(scenes, back):
        assert read.name == original.name
        assert np.array_equal(read.mask, original.mask)
        error = np.abs(read.image.astype(int) - original.image.astype(int))
        assert error.mean() < 4 and np.percentile(error, 99) < 40  # JPEG quality 95
    # Masks really are palette PNGs with the data set's colours (OpenCV shows colours).
    png = cv2.imread(str(root / "SegmentationClass" / f"{scenes[1].name}.png"))
    assert np.array_equal(png[..., ::-1], voc_palette(256)[scenes[1].mask])


def test_write_voc_adds_splits_but_refuses_mixed_classes(make_voc, tmp_path):
    scenes = ProceduralScenes(num_images=2, size=(32, 32), seed=0)
    write_voc(scenes, tmp_path / "out", "train")
    write_voc(open_dataset("synthetic", "val", num_images=1, size=(32, 32)), tmp_path / "out",
              "val")
    assert len(open_dataset(tmp_path / "out", "val")) == 1
    voc = make_voc()
    with pytest.raises(InputError, match="already holds a data set with classes"):
        write_voc(scenes, voc["root"], "extra")


def test_missing_files_are_named_with_the_split_file(make_voc):
    voc = make_voc()
    (voc["base"] / "JPEGImages" / "2007_000039.jpg").unlink()
    with pytest.raises(InputError, match=r"JPEGImages/2007_000039\.jpg: file is missing; "
                                         r"listed in .*train\.txt"):
        open_dataset(voc["root"])
    voc["base"].joinpath("SegmentationClass", "2008_000002.png").unlink()
    (voc["base"] / "ImageSets" / "Segmentation" / "val.txt").write_text("2008_000002\n")
    with pytest.raises(InputError, match=r"SegmentationClass/2008_000002\.png: file is missing"):
        open_dataset(voc["root"], "val")


def test_bad_split_names_and_empty_split_files(make_voc):
    voc = make_voc(splits=("train", "val"))
    with pytest.raises(InputError, match=r"no split 'test'.*splits found: train, val"):
        open_dataset(voc["root"], "test")
    (voc["base"] / "ImageSets" / "Segmentation" / "val.txt").write_text("\n  \n")
    with pytest.raises(InputError, match=r"val\.txt: empty split file"):
        open_dataset(voc["root"], "val")
    with pytest.raises(InputError, match=r"lists/nope\.txt: split file is missing"):
        open_dataset(voc["root"], "lists/nope.txt")
    with pytest.raises(InputError, match=r"no split 'nope'"):
        open_dataset(voc["root"], "nope.txt")
    assert len(open_dataset(voc["root"], "train.txt")) == 3  # a file name found in ImageSets


def test_mask_of_the_wrong_size_is_refused_not_resized(make_voc):
    voc = make_voc()
    path = voc["base"] / "SegmentationClass" / "2007_000039.png"
    write_palette_png(path, np.zeros((20, 32), np.uint8))
    ds = open_dataset(voc["root"])
    assert ds[0].mask.shape == (24, 32)
    with pytest.raises(InputError, match=r"2007_000039\.png: mask is 20×32 but its image "
                                         r".*2007_000039\.jpg is 24×32"):
        ds[1]


def test_label_outside_the_classes_is_refused(make_voc):
    voc = make_voc()
    mask = voc["masks"]["2008_000002"].copy()
    mask[5, 5], mask[6, 6] = 21, 40
    write_palette_png(voc["base"] / "SegmentationClass" / "2008_000002.png", mask)
    with pytest.raises(InputError, match=r"2008_000002\.png: label values 21, 40 are outside "
                                         r"the 21 classes \(0\.\.20\) and not the ignore label"):
        open_dataset(voc["root"])[2]


def test_rgb_mask_in_voc_is_refused(make_voc):
    voc = make_voc()
    path = voc["base"] / "SegmentationClass" / "2007_000032.png"
    cv2.imwrite(str(path), voc_palette(256)[voc["masks"]["2007_000032"]][..., ::-1].copy())
    with pytest.raises(InputError, match=r"2007_000032\.png: palette PNG expected but RGB found"):
        open_dataset(voc["root"])[0]


def test_unreadable_image_is_named(make_voc):
    voc = make_voc()
    (voc["base"] / "JPEGImages" / "2007_000032.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(InputError, match=r"2007_000032\.jpg: unreadable image"):
        open_dataset(voc["root"])[0]
