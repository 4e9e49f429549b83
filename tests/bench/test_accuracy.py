"""Accuracy figures on hand-made label maps of known IU, the one-sided regression bounds, and the
evaluation sets (procedural scenes, and a small folder written here)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fcn_edge.bench.accuracy import (THRESHOLDS, Accuracy, EvalSet, agreement, eval_set,
                                     predict_all, score, verdict)
from fcn_edge.data import PROCEDURAL_CLASSES, open_dataset, render_scene, voc_palette
from fcn_edge.errors import InputError
from fcn_edge.runtime.metadata import ArtifactMeta, DatasetInfo, Shapes

# One 2×4 image, three classes, the last two truth pixels ignored (255).
TRUTH = np.array([[0, 0, 1, 1], [2, 2, 255, 255]], np.uint8)
PRED = np.array([[0, 1, 1, 1], [2, 0, 0, 1]], np.uint8)
# Confusion over the six labelled pixels: n00 1, n01 1, n11 2, n22 1, n20 1, so
# IU0 = 1/(2+2-1) = 1/3, IU1 = 2/(2+3-2) = 2/3, IU2 = 1/(2+1-1) = 1/2: mean IU 0.5.
# The reference is the truth, with labels of its own (2, 2) where the truth is ignored.
REF = np.array([[0, 0, 1, 1], [2, 2, 2, 2]], np.uint8)


def _data(labels=(TRUTH,), num_classes=3, ignore_index=255) -> EvalSet:
    frames = tuple(np.zeros(t.shape + (3,), np.uint8) for t in labels)
    return EvalSet(frames, tuple(labels), num_classes, ignore_index, "hand-made")


def _meta(num_classes: int = 8, dataset=None, opt=(48, 64)) -> ArtifactMeta:
    classes = tuple(PROCEDURAL_CLASSES)[:num_classes] if num_classes <= 8 else \
        tuple(f"c{i}" for i in range(num_classes))
    palette = tuple(tuple(int(v) for v in rgb) for rgb in voc_palette(num_classes))
    return ArtifactMeta("fcn8s", "resnet18", num_classes, classes, palette,
                        (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                        shapes=Shapes((1, 32, 32), (1, *opt), (1, 2048, 2048)),
                        dataset=dataset if dataset is not None else DatasetInfo("synthetic"))


# --- score and agreement ----------------------------------------------------------------------

def test_score_gives_mean_iu_and_pixel_accuracy_of_known_maps():
    result = score([PRED], _data())
    assert result.mean_iou == pytest.approx(0.5)
    assert result.pixel_accuracy == pytest.approx(4 / 6)
    assert result.agreement is None and result.reference_miou is None
    assert result.delta_miou is None


def test_score_against_a_reference():
    result = score([PRED], _data(), reference=[REF])
    assert result.reference_miou == pytest.approx(1.0)  # the reference is the truth
    assert result.agreement == pytest.approx(4 / 6)     # ignored pixels do not count
    assert result.delta_miou == pytest.approx(-50.0)    # points, negative: worse


def test_agreement_counts_only_labelled_pixels_given_the_data():
    assert agreement([PRED], [REF], _data()) == pytest.approx(4 / 6)
    assert agreement([PRED], [REF]) == pytest.approx(4 / 8)              # every pixel
    assert agreement([PRED], [REF], _data(ignore_index=None)) == pytest.approx(4 / 8)
    assert agreement([REF, PRED], [REF, REF], _data((TRUTH, TRUTH))) == pytest.approx(10 / 12)


def test_agreement_with_every_pixel_ignored_is_full():
    ignored = np.full((2, 4), 255, np.uint8)
    assert agreement([PRED], [REF], _data((ignored,))) == 1.0


def test_agreement_refuses_maps_of_different_shapes():
    with pytest.raises(InputError, match=r"image 0: prediction \(2, 4\) vs reference \(4, 2\)"):
        agreement([PRED], [REF.reshape(4, 2)])


def test_score_refuses_a_prediction_count_that_does_not_match():
    with pytest.raises(InputError, match="2 predictions for 1 images"):
        score([PRED, PRED], _data())


def test_predict_all_calls_once_per_frame_in_order():
    data = _data((TRUTH, REF))
    seen = []

    def predict(frame):
        seen.append(frame.shape)
        return [[len(seen)]]
    labels = predict_all(predict, data)
    assert seen == [(2, 4, 3), (2, 4, 3)]
    assert [lab.tolist() for lab in labels] == [[[1]], [[2]]]
    assert all(isinstance(lab, np.ndarray) for lab in labels)


# --- Accuracy and the bounds ------------------------------------------------------------------

def test_delta_miou_is_in_points():
    assert Accuracy(0.75, 0.9, 1.0, 0.5).delta_miou == pytest.approx(25.0)
    assert Accuracy(0.5, 0.9, 1.0, 0.75).delta_miou == pytest.approx(-25.0)
    assert Accuracy(0.5, 0.9).delta_miou is None


def test_thresholds_are_the_documented_bounds():
    assert {p: (t.max_drop_points, t.min_agreement) for p, t in THRESHOLDS.items()} == {
        "fp32": (0.1, 0.999), "fp16": (0.5, None), "int8": (2.0, None)}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_a_drop_of_exactly_the_bound_passes_and_just_beyond_fails(precision):
    drop = THRESHOLDS[precision].max_drop_points
    at = Accuracy(0.8 - drop / 100, 0.9, 1.0, 0.8)
    assert at.delta_miou == pytest.approx(-drop)
    assert verdict(at, precision) == (True, "within bounds")
    beyond = Accuracy(0.8 - drop / 100 - 0.0001, 0.9, 1.0, 0.8)  # 0.01 points further
    passed, why = verdict(beyond, precision)
    assert not passed
    assert why == f"mean IU {beyond.delta_miou:+.2f} points vs the reference (allowed -{drop})"


def test_fp32_holds_label_agreement_at_its_bound():
    assert verdict(Accuracy(0.8, 0.9, 0.999, 0.8), "fp32") == (True, "within bounds")
    passed, why = verdict(Accuracy(0.8, 0.9, 0.9989, 0.8), "fp32")
    assert not passed and why == "labels agree on 99.890% of pixels (needed 99.9%)"


def test_fp16_and_int8_do_not_hold_label_agreement():
    for precision in ("fp16", "int8"):
        assert verdict(Accuracy(0.8, 0.9, 0.5, 0.8), precision) == (True, "within bounds")


def test_both_problems_are_named():
    passed, why = verdict(Accuracy(0.7, 0.9, 0.9, 0.8), "fp32")
    assert not passed
    assert why == ("mean IU -10.00 points vs the reference (allowed -0.1); "
                   "labels agree on 90.000% of pixels (needed 99.9%)")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_the_bounds_are_one_sided(precision):
    better = Accuracy(0.95, 0.99, 1.0, 0.5)  # 45 points better than the reference
    assert verdict(better, precision) == (True, "within bounds")


def test_without_a_reference_nothing_is_held():
    assert verdict(Accuracy(0.0, 0.0), "fp32") == (True, "no reference to compare with")


# --- eval_set ---------------------------------------------------------------------------------

def test_synthetic_eval_set_is_bgr_frames_of_the_requested_size():
    data = eval_set(_meta(dataset=DatasetInfo(difficulty="hard")), "synthetic", count=3, size=(40, 56))
    assert len(data) == 3 and data.num_classes == 8 and data.ignore_index == 255
    assert all(f.shape == (40, 56, 3) and f.dtype == np.uint8 for f in data.frames)
    assert all(lab.shape == (40, 56) for lab in data.labels)
    assert data.description == "3 procedural hard validation scenes of 40×56"
    truth = open_dataset("synthetic", "val", num_images=3, size=(40, 56), difficulty="hard")
    for i in range(3):
        np.testing.assert_array_equal(data.frames[i], truth[i].image[..., ::-1])  # RGB → BGR
        np.testing.assert_array_equal(data.labels[i], truth[i].mask)
        assert data.frames[i].flags.c_contiguous


def test_synthetic_eval_set_defaults_to_the_optimal_size_and_standard_scenes():
    data = eval_set(_meta(dataset=DatasetInfo(), opt=(32, 64)), count=1)
    assert data.frames[0].shape == (32, 64, 3)
    assert data.description == "1 procedural standard validation scenes of 32×64"


def test_eval_set_refuses_data_with_other_classes():
    with pytest.raises(InputError, match="synthetic has 8 classes but the model predicts 5"):
        eval_set(_meta(num_classes=5), "synthetic", count=1, size=(32, 32))


def test_eval_set_refuses_no_images():
    with pytest.raises(InputError, match="count=0"):
        eval_set(_meta(), "synthetic", count=0)


def test_folder_eval_set_keeps_each_image_at_its_size(tmp_path, write_folder):
    rng = np.random.default_rng(3)
    frames, masks = [], []
    for h, w in ((24, 32), (40, 20)):
        rgb, mask = render_scene(rng, h, w)
        mask = mask.copy()
        mask[0] = 255
        frames.append(np.ascontiguousarray(rgb[..., ::-1]))
        masks.append(mask)
    root = write_folder(tmp_path / "data", frames, masks)
    data = eval_set(_meta(), str(root), count=5)
    assert len(data) == 2 and data.num_classes == 8 and data.ignore_index == 255
    assert data.description == f"2 images of {root} (val)"
    for i in range(2):
        np.testing.assert_array_equal(data.frames[i], frames[i])  # BGR, as written
        np.testing.assert_array_equal(data.frames[i],
                                      cv2.imread(str(root / "images" / f"{i}.png")))
        np.testing.assert_array_equal(data.labels[i], masks[i])
    assert len(eval_set(_meta(), str(root), count=1)) == 1


def test_folder_eval_set_with_other_classes_is_refused(tmp_path, write_folder):
    frame = np.zeros((8, 8, 3), np.uint8)
    root = write_folder(tmp_path / "data", [frame], [np.zeros((8, 8))], classes=("a", "b"))
    with pytest.raises(InputError, match="has 2 classes but the model predicts 8"):
        eval_set(_meta(), str(root))
