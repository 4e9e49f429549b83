"""Procedural RGB-D and two-task scenes: the RGB data set unchanged, plausible depth, two tasks."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from fcn_edge.data.procedural import PROCEDURAL_CLASSES, ProceduralScenes
from fcn_edge.data.procedural_multi import (GEOMETRIC_CLASSES, ProceduralRGBD, ProceduralTwoTask,
                                            depth_for_scene, depth_from_png, depth_to_png,
                                            geometric_labels)
from fcn_edge.errors import InputError

WIRE = PROCEDURAL_CLASSES.index("wire")
DISC = PROCEDURAL_CLASSES.index("disc")
RECTANGLE = PROCEDURAL_CLASSES.index("rectangle")


@pytest.fixture(scope="module")
def rgbd() -> list:
    """60 RGB-D scenes, generated once for the module."""
    return list(ProceduralRGBD(num_images=60, size=(96, 112), seed=2))


@pytest.mark.parametrize("cls", [ProceduralRGBD, ProceduralTwoTask])
@pytest.mark.parametrize("difficulty", ["standard", "hard"])
def test_image_and_mask_are_procedural_scenes_own(cls, difficulty):
    plain = ProceduralScenes(num_images=6, size=(40, 56), seed=7, difficulty=difficulty)
    multi = cls(num_images=6, size=(40, 56), seed=7, difficulty=difficulty)
    assert len(multi) == 6 and multi.classes == PROCEDURAL_CLASSES and multi.num_classes == 8
    for index in (0, 3, 5):
        a, b = plain[index], multi[index]
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
        assert a.name == b.name == f"scene_7_{index:06d}"


def test_rgbd_sample_carries_depth_only():
    scenes = ProceduralRGBD(num_images=3, size=(48, 64), seed=1)
    sample = scenes[1]
    assert sample.masks is None and set(sample.inputs) == {"depth"}
    depth = sample.inputs["depth"]
    assert depth.shape == (48, 64) and depth.dtype == np.float32
    assert scenes.layout == "synthetic-rgbd"
    assert repr(scenes) == "ProceduralRGBD(num_images=3, size=(48, 64), seed=1, " \
                           "difficulty='standard')"


def test_depth_is_deterministic_and_order_independent():
    a = ProceduralRGBD(num_images=10, size=(64, 64), seed=5)
    b = ProceduralRGBD(num_images=10, size=(64, 64), seed=5)
    later_first = {i: b[i].inputs["depth"] for i in (9, 2, -1)}
    assert np.array_equal(later_first[9], a[9].inputs["depth"])
    assert np.array_equal(later_first[2], a[2].inputs["depth"])
    assert np.array_equal(later_first[-1], later_first[9])
    assert not np.array_equal(a[0].inputs["depth"], a[1].inputs["depth"])
    other = ProceduralRGBD(num_images=10, size=(64, 64), seed=6)
    assert not np.array_equal(a[0].inputs["depth"], other[0].inputs["depth"])


def test_depth_values_are_plausible(rgbd):
    invalid = total = 0
    for sample in rgbd:
        depth = sample.inputs["depth"]
        assert np.isfinite(depth).all() and (depth >= 0).all()
        valid = depth[depth > 0]
        assert valid.min() >= 0.3 and valid.max() <= 7.5, (valid.min(), valid.max())
        invalid, total = invalid + int((depth == 0).sum()), total + depth.size
        # The floor recedes towards the top: background far at the top, near at the bottom.
        background = np.where((sample.mask == 0) & (depth > 0), depth, np.nan)
        top, bottom = np.nanmean(background[:8]), np.nanmean(background[-8:])
        assert 4.0 < top < 7.5 and 1.0 < bottom < 2.0, (top, bottom)
    assert 0.001 <= invalid / total <= 0.01, invalid / total  # a few holes, as in Kinect depth


def test_objects_are_nearer_than_the_background_in_their_rows(rgbd):
    checked = 0
    for sample in rgbd:
        depth, mask = sample.inputs["depth"], sample.mask
        objects = (mask > 0) & (mask != 255) & (depth > 0)
        rows = objects.any(axis=1)
        background = (mask == 0) & (depth > 0) & rows[:, None]
        if not objects.any() or not background.any():
            continue
        checked += 1
        assert depth[objects].mean() < depth[background].mean() - 0.3, sample.name
    assert checked >= 50


def test_thin_wires_are_depth_discontinuities(rgbd):
    """Where a wire pixel touches background (left/right or up/down), depth jumps ≥ 0.3 m."""
    jumps = []
    for sample in rgbd:
        depth, mask = sample.inputs["depth"], sample.mask
        for axis in (0, 1):
            here = [slice(None), slice(None)]
            there = [slice(None), slice(None)]
            here[axis], there[axis] = slice(0, -1), slice(1, None)
            m0, m1 = mask[tuple(here)], mask[tuple(there)]
            d0, d1 = depth[tuple(here)], depth[tuple(there)]
            edge = (((m0 == WIRE) & (m1 == 0)) | ((m0 == 0) & (m1 == WIRE))) & (d0 > 0) & (d1 > 0)
            jumps.append(np.abs(d0 - d1)[edge])
    jumps = np.concatenate(jumps)
    assert jumps.size >= 200, jumps.size
    assert (jumps >= 0.3).mean() > 0.97, (jumps >= 0.3).mean()


def test_depth_for_a_hand_made_mask():
    mask = np.zeros((64, 80), np.uint8)
    mask[20:40, 10:30] = DISC
    mask[:, 60:62] = WIRE          # a 2 px pole
    mask[0:4, 30:45] = 255         # ignored pixels: the floor, like background
    depth = depth_for_scene(np.random.default_rng(0), mask)
    assert depth.shape == mask.shape and depth.dtype == np.float32
    valid = depth > 0
    pole, beside = depth[:, 60:62][valid[:, 60:62]], depth[:, 56:58][valid[:, 56:58]]
    assert pole.mean() < beside.mean() - 0.5 * 0.9
    disc = depth[20:40, 10:30][valid[20:40, 10:30]]
    floor = depth[20:40, 40:56][valid[20:40, 40:56]]
    assert disc.mean() < floor.mean() - 0.45
    ignored, background = depth[0:4, 30:45], depth[0:4, 45:58]  # same rows
    assert abs(np.median(ignored[ignored > 0]) - np.median(background[background > 0])) < 0.3
    with pytest.raises(InputError):
        depth_for_scene(np.random.default_rng(0), np.zeros((8, 8, 3), np.uint8))


def test_depth_does_not_encode_the_class():
    """A class's distance is drawn per scene: disc is nearer than rectangle in some scenes and
    farther in others."""
    mask = np.zeros((48, 48), np.uint8)
    mask[10:40, 4:20], mask[10:40, 28:44] = DISC, RECTANGLE
    nearer = [np.median(d[10:40, 4:20]) < np.median(d[10:40, 28:44])
              for d in (depth_for_scene(np.random.default_rng(s), mask) for s in range(40))]
    assert 5 <= sum(nearer) <= 35, sum(nearer)


def test_geometric_labels_of_every_class():
    expected = {"background": 0, "disc": 1, "rectangle": 1, "triangle": 1, "ring": 2, "star": 1,
                "wire": 2, "blob": 1}
    assert GEOMETRIC_CLASSES == ("background", "solid", "thin")
    semantic = np.array([[PROCEDURAL_CLASSES.index(c) for c in expected] + [255]], np.uint8)
    geometric = geometric_labels(semantic)
    assert geometric.dtype == np.uint8 and geometric.shape == semantic.shape
    assert geometric.tolist() == [list(expected.values()) + [255]]
    with pytest.raises(InputError):
        geometric_labels(np.array([[0, 8]], np.uint8))
    with pytest.raises(InputError):
        geometric_labels(np.array([[0, 1]], np.int64))


def test_two_task_samples_and_tasks():
    scenes = ProceduralTwoTask(num_images=4, size=(64, 64), seed=3)
    assert scenes.tasks == {"semantic": PROCEDURAL_CLASSES, "geometric": GEOMETRIC_CLASSES}
    assert scenes.primary_task == "semantic" and scenes.layout == "synthetic-twotask"
    seen = set()
    for sample in scenes:
        assert sample.inputs is None and set(sample.masks) == {"semantic", "geometric"}
        assert np.array_equal(sample.masks["semantic"], sample.mask)
        geometric = sample.masks["geometric"]
        assert geometric.dtype == np.uint8 and geometric.shape == sample.mask.shape
        assert np.array_equal(geometric == 0, sample.mask == 0)
        assert np.array_equal(geometric == 2, np.isin(sample.mask, (WIRE, 4)))
        seen |= set(np.unique(geometric).tolist())
    assert seen == {0, 1, 2}


@pytest.mark.parametrize("cls", [ProceduralRGBD, ProceduralTwoTask])
@pytest.mark.parametrize("kwargs", [dict(num_images=0), dict(size=(8, 8)), dict(size=(32,)),
                                    dict(seed=-1), dict(difficulty="nightmare")])
def test_bad_arguments_are_input_errors(cls, kwargs):
    with pytest.raises(InputError):
        cls(**{"num_images": 2, "size": (32, 32), **kwargs})


def test_depth_png_round_trip(tmp_path):
    depth = np.array([[0.0, 0.4, 1.2344, 6.0], [65.535, 70.0, np.nan, -1.0]], np.float32)
    png = depth_to_png(depth)
    assert png.dtype == np.uint16
    assert png.tolist() == [[0, 400, 1234, 6000], [65535, 0, 0, 0]]
    back = depth_from_png(png)
    assert back.dtype == np.float32
    assert np.allclose(back[0], depth[0], atol=0.0005) and back[1, 1:].tolist() == [0, 0, 0]
    scene = ProceduralRGBD(num_images=1, size=(32, 48), seed=0)[0].inputs["depth"]
    path = tmp_path / "depth.png"
    assert cv2.imwrite(str(path), depth_to_png(scene))
    read = depth_from_png(cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
    assert read.shape == scene.shape
    assert np.abs(read - scene).max() <= 0.0005 + 1e-6
    assert np.array_equal(read == 0, scene == 0)
    with pytest.raises(InputError):
        depth_from_png(png.astype(np.float32))


def test_generation_speed():
    scenes = ProceduralRGBD(num_images=100, size=(128, 128), seed=0)
    start = time.perf_counter()
    samples = [scenes[i] for i in range(100)]
    seconds = time.perf_counter() - start
    print(f"\n100 RGB-D scenes of 128×128: {seconds:.2f} s")
    assert len({s.name for s in samples}) == 100
