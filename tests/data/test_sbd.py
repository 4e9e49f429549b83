"""SBD: the release's cls/*.mat files and the SegmentationClassAug flavour."""
from __future__ import annotations

import numpy as np
import pytest

from fcn_edge.data import (VOC_CLASSES, SBDSegmentation, detect_layout, open_dataset,
                           read_sbd_mat, write_palette_png)
from fcn_edge.errors import InputError


def test_sbd_release_reads_gtcls_segmentation(make_sbd):
    sbd = make_sbd()
    assert detect_layout(sbd["root"]) == "sbd"
    ds = open_dataset(sbd["root"], "train")
    assert isinstance(ds, SBDSegmentation) and ds.flavour == "mat" and ds.layout == "sbd"
    assert ds.root == sbd["base"] and ds.classes == VOC_CLASSES and len(ds) == 2
    for sample in ds:
        assert sample.image.shape == (24, 32, 3)
        assert np.array_equal(sample.mask, sbd["masks"][sample.name])
        assert set(np.unique(sample.mask)) == {0, 3, 7, 20}
    val = open_dataset(sbd["root"], "val")
    assert val.names == ("2008_000003",)


def test_mat_without_gtcls_names_the_file(make_sbd, tmp_path):
    sbd = make_sbd()
    from scipy.io import savemat
    savemat(sbd["base"] / "cls" / "2008_000003.mat", {"GTinst": {"Segmentation": np.zeros(2)}})
    with pytest.raises(InputError, match=r"2008_000003\.mat: no struct GTcls with field "
                                         r"Segmentation \(variables: GTinst\)"):
        open_dataset(sbd["root"])[1]
    (tmp_path / "junk.mat").write_bytes(b"MATLAB? no")
    with pytest.raises(InputError, match=r"junk\.mat: unreadable MATLAB file"):
        read_sbd_mat(tmp_path / "junk.mat")


def test_sbd_label_outside_classes_is_refused(make_sbd):
    sbd = make_sbd()
    from scipy.io import savemat
    mask = sbd["masks"]["2008_000002"].copy()
    mask[3, 3] = 22
    savemat(sbd["base"] / "cls" / "2008_000002.mat", {"GTcls": {"Segmentation": mask}})
    with pytest.raises(InputError, match=r"2008_000002\.mat: label values 22 are outside"):
        open_dataset(sbd["root"])[0]


def test_missing_mat_file_is_named(make_sbd):
    sbd = make_sbd()
    (sbd["base"] / "cls" / "2008_000003.mat").unlink()
    with pytest.raises(InputError, match=r"cls/2008_000003\.mat: file is missing; listed in "
                                         r".*train\.txt"):
        open_dataset(sbd["root"])


def test_segmentation_class_aug_flavour(make_voc):
    voc = make_voc(mask_dir="SegmentationClassAug", splits=())
    aug_list = voc["base"] / "ImageSets" / "SegmentationAug" / "train_aug.txt"
    aug_list.parent.mkdir(parents=True)
    aug_list.write_text("/JPEGImages/2007_000039.jpg /SegmentationClassAug/2007_000039.png\n"
                        "/JPEGImages/2008_000002.jpg /SegmentationClassAug/2008_000002.png\n")
    assert detect_layout(voc["root"]) == "sbd"  # no SegmentationClass/: only Aug masks
    ds = open_dataset(voc["root"], "train_aug")
    assert ds.flavour == "aug" and ds.names == ("2007_000039", "2008_000002")
    assert np.array_equal(ds[1].mask, voc["masks"]["2008_000002"])


def test_voc_root_with_aug_masks_opens_as_voc_unless_asked(make_voc):
    voc = make_voc()
    for name, mask in voc["masks"].items():  # Aug masks differ from VOC's: all class 5
        write_palette_png(voc["base"] / "SegmentationClassAug" / f"{name}.png",
                          np.full_like(mask, 5))
    assert detect_layout(voc["root"]) == "voc"
    assert np.array_equal(open_dataset(voc["root"])[0].mask, voc["masks"]["2007_000032"])
    aug = open_dataset(voc["root"], layout="sbd")
    assert aug.flavour == "aug" and (aug[0].mask == 5).all()
