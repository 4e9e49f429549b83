"""Procedural scenes: deterministic, all classes present, thin wires, learnable appearance."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fcn_edge.data import PROCEDURAL_CLASSES, ProceduralScenes, open_dataset, voc_palette
from fcn_edge.errors import InputError

WIRE = PROCEDURAL_CLASSES.index("wire")


@pytest.fixture(scope="module")
def hundred() -> list:
    """100 scenes at the default size, generated once for the module."""
    return list(ProceduralScenes(num_images=100, size=(256, 256), seed=0))


def test_dataset_protocol():
    scenes = ProceduralScenes(num_images=7, size=(48, 64), seed=3)
    assert len(scenes) == 7 and scenes.num_classes == len(PROCEDURAL_CLASSES) == 8
    assert scenes.classes[0] == "background" and "wire" in scenes.classes
    assert scenes.ignore_index == 255 and scenes.layout == "synthetic"
    assert np.array_equal(scenes.palette, voc_palette(8))
    sample = scenes[2]
    assert sample.image.shape == (48, 64, 3) and sample.image.dtype == np.uint8
    assert sample.mask.shape == (48, 64) and sample.mask.dtype == np.uint8
    assert sample.mask.max() < 8
    assert sample.name == "scene_3_000002"
    assert np.array_equal(scenes[-1].mask, scenes[6].mask)
    with pytest.raises(IndexError):
        scenes[7]
    assert len(list(scenes)) == 7


def test_same_seed_and_index_give_identical_arrays_in_any_order():
    a = ProceduralScenes(num_images=20, size=(64, 64), seed=5)
    b = ProceduralScenes(num_images=20, size=(64, 64), seed=5)
    later_first = [b[i] for i in (13, 4)]
    for sample, index in zip(later_first, (13, 4)):
        assert np.array_equal(sample.image, a[index].image)
        assert np.array_equal(sample.mask, a[index].mask)


def test_different_index_or_seed_gives_different_scenes():
    scenes = ProceduralScenes(num_images=3, size=(64, 64), seed=0)
    other = ProceduralScenes(num_images=3, size=(64, 64), seed=1)
    assert not np.array_equal(scenes[0].image, scenes[1].image)
    assert not np.array_equal(scenes[0].image, other[0].image)


def test_synthetic_splits_use_disjoint_seeds():
    train = open_dataset("synthetic", "train", num_images=2, size=(32, 32), seed=4)
    val = open_dataset("synthetic", "val", num_images=2, size=(32, 32), seed=4)
    assert (train.seed, val.seed) == (4, 4 + 10_000_019)
    assert train.split == "train" and val.split == "val"
    assert not np.array_equal(train[0].image, val[0].image)
    assert np.array_equal(val[1].image, ProceduralScenes(2, (32, 32), 10_000_023)[1].image)


def test_every_class_appears_in_100_scenes(hundred):
    pixels = sum(np.bincount(s.mask.ravel(), minlength=8) for s in hundred)
    assert pixels.shape == (8,) and (pixels > 0).all(), pixels
    images_with = sum((np.bincount(s.mask.ravel(), minlength=8) > 0) for s in hundred)
    assert (images_with[1:] >= 15).all(), images_with  # each object class in many images
    assert 0.6 < pixels[0] / pixels.sum() < 0.97        # background dominates, as in VOC


def test_wires_are_thinner_than_a_5x5_erosion(hundred):
    """2–4 px lines: a 5×5 erosion removes them (except where two wires cross)."""
    kernel = np.ones((5, 5), np.uint8)
    with_wire = vanished = wire_pixels = surviving = 0
    for sample in hundred:
        wire = (sample.mask == WIRE).astype(np.uint8)
        if wire.any():
            left = int(cv2.erode(wire, kernel).sum())
            with_wire, vanished = with_wire + 1, vanished + (left == 0)
            wire_pixels, surviving = wire_pixels + int(wire.sum()), surviving + left
    assert with_wire >= 20
    assert vanished >= 0.8 * with_wire
    assert surviving < 0.01 * wire_pixels


def test_background_is_cluttered_not_flat(hundred):
    stds = [s.image[s.mask == 0].std(axis=0).mean() for s in hundred[:20]]
    assert min(stds) > 3.0  # noise, gradients and distractors everywhere


def test_classes_have_characteristic_colours(hundred):
    """Objects are saturated and their hue lies in the class's range; background is not."""
    hsv = [cv2.cvtColor(s.image, cv2.COLOR_RGB2HSV) for s in hundred]
    masks = [s.mask for s in hundred]

    def pixels(label: int) -> np.ndarray:
        return np.concatenate([h[m == label] for h, m in zip(hsv, masks)])
    assert np.median(pixels(0)[:, 1]) < 90 < np.median(pixels(1)[:, 1])
    hue_ranges = {"disc": (0, 9), "rectangle": (83, 95), "triangle": (49, 63), "ring": (159, 171),
                  "star": (109, 121), "wire": (19, 32), "blob": (134, 146)}
    for name, (low, high) in hue_ranges.items():
        hue = np.median(pixels(PROCEDURAL_CLASSES.index(name))[:, 0])
        assert low <= hue <= high, (name, hue)


def test_hard_scenes_share_hues_and_hold_more_distractors():
    hard = ProceduralScenes(num_images=40, size=(96, 96), seed=0, difficulty="hard")
    standard = ProceduralScenes(num_images=40, size=(96, 96), seed=0)
    assert repr(hard).endswith("difficulty='hard')")
    hues = {}
    for label in (1, 4):  # disc and ring: both red when hard
        values = np.concatenate([cv2.cvtColor(s.image, cv2.COLOR_RGB2HSV)[s.mask == label][:, 0]
                                 for s in hard])
        hues[label] = np.median(np.where(values > 150, values - 180, values))
    assert abs(hues[1] - hues[4]) < 10, hues
    assert not np.array_equal(hard[0].image, standard[0].image)
    with pytest.raises(InputError, match="difficulty"):
        ProceduralScenes(difficulty="extreme")


@pytest.mark.parametrize("kwargs", [dict(num_images=0), dict(size=(8, 64)), dict(seed=-1),
                                    dict(size=(64,))])
def test_bad_arguments_are_input_errors(kwargs):
    with pytest.raises(InputError):
        ProceduralScenes(**kwargs)


def test_unknown_synthetic_split_or_option_is_an_input_error():
    with pytest.raises(InputError, match="splits train, val, test"):
        open_dataset("synthetic", "trainval")
    with pytest.raises(InputError, match="no option colour"):
        open_dataset("synthetic", colour="red")

