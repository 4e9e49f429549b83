"""Tests of fcn_edge.metrics: the four §5 metrics of Long, Shelhamer & Darrell (2015)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from fractions import Fraction as F
from pathlib import Path

import numpy as np
import pytest

from fcn_edge.errors import InputError
from fcn_edge.metrics import ConfusionMatrix, SegmentationMetrics

# Hand example A, 3 classes; n[i][j] = pixels of truth i predicted j.
#        pred 0  1  2 | t_i  n_ii  column sum  union = t_i + col - n_ii
# truth 0   [3, 1, 0] |  4    3       4          5
# truth 1   [0, 2, 2] |  4    2       3          5
# truth 2   [1, 0, 1] |  2    1       3          4
# pixel acc = (3+2+1)/10                        = 3/5
# mean acc  = (3/4 + 2/4 + 1/2) / 3             = 7/12
# mean IU   = (3/5 + 2/5 + 1/4) / 3             = 5/12
# fw IU     = (4·3/5 + 4·2/5 + 2·1/4) / 10      = 9/20
MATRIX_A = [[3, 1, 0], [0, 2, 2], [1, 0, 1]]

# Hand example B, 4 classes: class 2 is predicted once but never true, class 3 is absent.
#        pred 0  1  2  3 | t_i  n_ii  col  union
# truth 0   [2, 0, 1, 0] |  3    2     3    4     IU 1/2, acc 2/3
# truth 1   [1, 3, 0, 0] |  4    3     3    4     IU 3/4, acc 3/4
# truth 2   [0, 0, 0, 0] |  0    0     1    1     IU 0 (counts), acc undefined
# truth 3   [0, 0, 0, 0] |  0    0     0    0     IU and acc undefined (excluded)
# pixel acc = 5/7; mean acc = (2/3 + 3/4)/2 = 17/24; mean IU = (1/2 + 3/4 + 0)/3 = 5/12
# fw IU     = (3·1/2 + 4·3/4 + 0·0) / 7 = 9/14
MATRIX_B = [[2, 0, 1, 0], [1, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def pixels_of(matrix: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(pred, target) 1-D maps holding exactly matrix[i][j] pixels of truth i predicted j."""
    n = np.asarray(matrix)
    truth, pred = np.indices(n.shape)
    return np.repeat(pred.ravel(), n.ravel()), np.repeat(truth.ravel(), n.ravel())


def naive_matrix(pred: np.ndarray, target: np.ndarray, nc: int, ignore: int | None) -> np.ndarray:
    """Reference: a plain double loop over pixels."""
    m = np.zeros((nc, nc), dtype=np.int64)
    for p_row, t_row in zip(pred, target):
        for p, t in zip(p_row, t_row):
            if t != ignore:
                m[t, p] += 1
    return m


def naive_metrics(m: np.ndarray) -> tuple[float, float, float, float]:
    """Reference: the four §5 formulas class by class, skipping undefined terms."""
    nc, total = len(m), m.sum()
    t = [m[i].sum() for i in range(nc)]
    acc = [m[i, i] / t[i] for i in range(nc) if t[i]]
    unions = [(i, t[i] + m[:, i].sum() - m[i, i]) for i in range(nc)]
    iu = [(i, m[i, i] / u) for i, u in unions if u]
    return (sum(m[i, i] for i in range(nc)) / total, sum(acc) / len(acc),
            sum(v for _, v in iu) / len(iu), sum(t[i] * v for i, v in iu) / total)


def computed(matrix: list[list[int]]) -> SegmentationMetrics:
    cm = ConfusionMatrix(len(matrix))
    cm.update(*pixels_of(matrix))
    return cm.compute()


# --- metric values worked out by hand -------------------------------------------------

def test_hand_example_a() -> None:
    m = computed(MATRIX_A)
    assert m.pixel_accuracy == pytest.approx(float(F(3, 5)))
    assert m.mean_accuracy == pytest.approx(float(F(7, 12)))
    assert m.mean_iou == pytest.approx(float(F(5, 12)))
    assert m.fw_iou == pytest.approx(float(F(9, 20)))
    np.testing.assert_allclose(m.iou, [3 / 5, 2 / 5, 1 / 4])
    np.testing.assert_allclose(m.accuracy, [3 / 4, 2 / 4, 1 / 2])
    assert m.present.tolist() == [True, True, True]
    assert m.num_pixels == 10


def test_update_counts_rows_truth_columns_prediction() -> None:
    cm = ConfusionMatrix(3)
    cm.update(np.array([[0, 1], [2, 2]]), np.array([[0, 0], [1, 2]]))
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 0, 1], [0, 0, 1]]
    assert cm.matrix.dtype == np.int64


def test_absent_class_excluded_and_false_positive_class_counted() -> None:
    m = computed(MATRIX_B)
    assert m.pixel_accuracy == pytest.approx(float(F(5, 7)))
    assert m.mean_accuracy == pytest.approx(float(F(17, 24)))
    assert m.mean_iou == pytest.approx(float(F(5, 12)))
    assert m.fw_iou == pytest.approx(float(F(9, 14)))
    assert m.iou[2] == 0.0 and math.isnan(m.iou[3])
    assert math.isnan(m.accuracy[2]) and math.isnan(m.accuracy[3])
    assert m.present.tolist() == [True, True, True, False]


def test_perfect_prediction_scores_one() -> None:
    m = computed([[5, 0], [0, 3]])
    assert (m.pixel_accuracy, m.mean_accuracy, m.mean_iou, m.fw_iou) == (1.0, 1.0, 1.0, 1.0)


def test_empty_matrix_gives_nan_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cm = ConfusionMatrix(3)
        cm.update(np.full((2, 2), 1), np.full((2, 2), 255))  # every pixel ignored
        cm.update(np.zeros((0, 4), np.int64), np.zeros((0, 4), np.int64))
        m = cm.compute()
    assert all(math.isnan(v) for v in (m.pixel_accuracy, m.mean_accuracy, m.mean_iou, m.fw_iou))
    assert np.isnan(m.iou).all() and np.isnan(m.accuracy).all()
    assert m.num_pixels == 0 and not m.present.any()


def test_compute_raises_no_warning_with_absent_classes() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = computed(MATRIX_B)
    assert m.mean_iou == pytest.approx(5 / 12)


def test_metrics_arrays_are_read_only() -> None:
    m = computed(MATRIX_A)
    with pytest.raises(ValueError):
        m.iou[0] = 0.0
    assert m.iou[0] == pytest.approx(3 / 5)


# --- ignore_index, shapes, streaming, merging -------------------------------------------

def test_ignore_index_pixels_are_skipped() -> None:
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(np.array([0, 1, 2, 2]), np.array([0, 255, 255, 2]))
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]


@pytest.mark.parametrize("ignore", [-1, -100, 1000, 65535])
def test_other_ignore_labels(ignore: int) -> None:
    dtype = np.uint16 if ignore == 65535 else np.int32
    cm = ConfusionMatrix(3, ignore_index=ignore)
    cm.update(np.array([0, 1, 2, 2], dtype), np.array([0, ignore, ignore, 1], dtype))
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]


def test_ignore_index_none_counts_every_label() -> None:
    cm = ConfusionMatrix(3, ignore_index=None)
    cm.update(np.array([0, 1, 2]), np.array([0, 2, 2]))
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]
    with pytest.raises(InputError, match=r"ignore_index=None: \[255\]"):
        cm.update(np.array([0]), np.array([255]))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64])
def test_every_integer_dtype_gives_the_same_matrix(dtype: type) -> None:
    pred, target = pixels_of(MATRIX_A)
    cm = ConfusionMatrix(3, ignore_index=-1 if np.dtype(dtype).kind == "i" else 255)
    cm.update(pred.astype(dtype), target.astype(dtype))
    assert cm.matrix.tolist() == MATRIX_A


def test_batch_equals_single_maps_and_channel_axis_is_squeezed() -> None:
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 5, (4, 6, 7))
    target = np.where(rng.random((4, 6, 7)) < 0.1, 255, rng.integers(0, 5, (4, 6, 7)))
    single, batch, channel = ConfusionMatrix(5), ConfusionMatrix(5), ConfusionMatrix(5)
    for p, t in zip(pred, target):
        single.update(p, t)
    batch.update(pred, target)
    channel.update(pred, target[:, None])  # N×H×W prediction, N×1×H×W label
    assert single.matrix.sum() == (target != 255).sum()
    np.testing.assert_array_equal(batch.matrix, single.matrix)
    np.testing.assert_array_equal(channel.matrix, single.matrix)


def test_streaming_equals_one_update_over_concatenation() -> None:
    rng = np.random.default_rng(2)
    preds = [rng.integers(0, 4, (3, 5)) for _ in range(5)]
    targets = [rng.integers(0, 4, (3, 5)) for _ in range(5)]
    streamed, whole = ConfusionMatrix(4), ConfusionMatrix(4)
    for p, t in zip(preds, targets):
        streamed.update(p, t)
    whole.update(np.concatenate(preds), np.concatenate(targets))
    np.testing.assert_array_equal(streamed.matrix, whole.matrix)
    assert streamed.matrix.sum() == 75


def test_merge_equals_single_matrix_and_returns_self() -> None:
    rng = np.random.default_rng(3)
    pred, target = rng.integers(0, 6, (2, 9, 9)), rng.integers(0, 6, (2, 9, 9))
    a, b, single = ConfusionMatrix(6), ConfusionMatrix(6), ConfusionMatrix(6)
    a.update(pred[0], target[0])
    b.update(pred[1], target[1])
    single.update(pred, target)
    assert a.merge(b) is a
    np.testing.assert_array_equal(a.matrix, single.matrix)


def test_reset_from_matrix_and_repr() -> None:
    cm = ConfusionMatrix.from_matrix(np.array(MATRIX_A, dtype=np.uint32), ignore_index=None)
    assert cm.matrix.tolist() == MATRIX_A and cm.matrix.dtype == np.int64
    assert cm.compute().mean_iou == pytest.approx(5 / 12)
    assert repr(cm) == "ConfusionMatrix(num_classes=3, ignore_index=None, pixels=10)"
    cm.reset()
    assert cm.matrix.sum() == 0


def test_large_input_crosses_chunk_boundaries() -> None:
    rng = np.random.default_rng(4)
    n = 3 * 2**18 + 12345
    pred = rng.integers(0, 21, n).astype(np.uint8)
    target = np.where(rng.random(n) < 0.05, 255, rng.integers(0, 21, n)).astype(np.uint8)
    cm = ConfusionMatrix(21)
    cm.update(pred, target)
    keep = target != 255
    expected = np.bincount(21 * target[keep].astype(np.int64) + pred[keep], minlength=441)
    np.testing.assert_array_equal(cm.matrix.ravel(), expected)


def test_bad_value_in_a_late_chunk_leaves_matrix_untouched() -> None:
    pred = np.zeros(2**19, dtype=np.uint8)
    target = np.zeros(2**19, dtype=np.uint8)
    target[-1] = 9
    cm = ConfusionMatrix(3)
    with pytest.raises(InputError, match=r"\[9\]"):
        cm.update(pred, target)
    assert cm.matrix.sum() == 0


@pytest.mark.parametrize("nc, ignore, dtype", [(4, 255, np.uint8), (21, 255, np.int64),
                                                (300, 1000, np.uint16), (300, -1, np.int32)])
def test_random_cross_check_against_naive_loops(nc: int, ignore: int, dtype: type) -> None:
    rng = np.random.default_rng(nc)
    pred = rng.integers(0, nc, (13, 17)).astype(dtype)
    target = np.where(rng.random((13, 17)) < 0.2, ignore, rng.integers(0, nc, (13, 17)))
    target = target.astype(dtype)
    cm = ConfusionMatrix(nc, ignore_index=ignore)
    cm.update(pred, target)
    reference = naive_matrix(pred, target, nc, ignore)
    np.testing.assert_array_equal(cm.matrix, reference)
    m = cm.compute()
    expected = naive_metrics(reference)
    np.testing.assert_allclose([m.pixel_accuracy, m.mean_accuracy, m.mean_iou, m.fw_iou],
                               expected)


# --- bad input ------------------------------------------------------------------------

def raises_input_error(fn, *args, **kwargs) -> str:
    """Run fn, check it raises an InputError that is a ValueError, return the message."""
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_shape_mismatch_names_both_shapes() -> None:
    msg = raises_input_error(ConfusionMatrix(3).update,
                             np.zeros((2, 3), int), np.zeros((3, 2), int))
    assert "(2, 3)" in msg and "(3, 2)" in msg


def test_scores_instead_of_labels_hint_argmax() -> None:
    msg = raises_input_error(ConfusionMatrix(3).update, np.zeros((1, 3, 4, 4), int),
                             np.zeros((1, 4, 4), int))
    assert "(1, 3, 4, 4)" in msg and "argmax(1)" in msg


@pytest.mark.parametrize("which", ["pred", "target"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "complex128", "bool", "object"])
def test_non_integer_arrays_rejected(which: str, dtype: str) -> None:
    bad, good = np.zeros((2, 2), dtype=dtype), np.zeros((2, 2), dtype=np.int64)
    args = (bad, good) if which == "pred" else (good, bad)
    msg = raises_input_error(ConfusionMatrix(3).update, *args)
    assert f"{which} must hold integer class ids, got {dtype}" in msg
    if which == "pred":
        assert "pass integer class ids, e.g. logits.argmax(1)" in msg


def test_ragged_input_rejected() -> None:
    msg = raises_input_error(ConfusionMatrix(3).update, [[0, 1], [2]], [0, 1])
    assert "pred cannot be made into an array" in msg


def test_target_out_of_range_lists_values_and_settings() -> None:
    msg = raises_input_error(ConfusionMatrix(3).update, np.zeros(4, int), np.array([0, 7, -2, 7]))
    assert "[-2, 7]" in msg and "num_classes=3" in msg and "ignore_index=255" in msg


def test_huge_bad_target_label_listed() -> None:
    msg = raises_input_error(ConfusionMatrix(3).update, np.zeros(3, int), np.array([0, 255, 10**9]))
    assert "[1000000000]" in msg


def test_many_bad_values_are_truncated() -> None:
    msg = raises_input_error(ConfusionMatrix(3).update, np.zeros(20, int), np.arange(20) + 3)
    assert "[3, 4, 5, 6, 7] (first 5 of 20)" in msg


@pytest.mark.parametrize("bad", [3, 255, -1])
def test_prediction_out_of_range_rejected_including_ignore_label(bad: int) -> None:
    msg = raises_input_error(ConfusionMatrix(3).update, np.array([0, bad]), np.array([0, 1]))
    assert f"[{bad}]" in msg and "[0, 3)" in msg


@pytest.mark.parametrize("nc, ignore, fact", [
    (0, 255, "num_classes must be a positive integer, got 0"),
    (-2, 255, "got -2"), (True, 255, "got True"), (2.5, 255, "got 2.5"),
    (3, 0, "ignore_index=0 is a real class id for num_classes=3"),
    (300, 255, "ignore_index=255 is a real class id for num_classes=300"),
    (3, "255", "ignore_index must be an integer or None, got '255'"),
])
def test_bad_construction(nc, ignore, fact: str) -> None:
    assert fact in raises_input_error(ConfusionMatrix, nc, ignore)


def test_merge_mismatch_rejected() -> None:
    a = ConfusionMatrix(3)
    assert "num_classes=4" in raises_input_error(a.merge, ConfusionMatrix(4))
    assert "ignore_index=-1" in raises_input_error(a.merge, ConfusionMatrix(3, ignore_index=-1))
    assert "got ndarray" in raises_input_error(a.merge, np.zeros((3, 3), int))


@pytest.mark.parametrize("matrix, fact", [
    (np.zeros((2, 3), int), "got shape (2, 3)"),
    (np.array([[1, -1], [0, 0]]), "negative counts (min -1)"),
    (np.zeros((2, 2)), "got float64"),
])
def test_from_matrix_validates(matrix: np.ndarray, fact: str) -> None:
    assert fact in raises_input_error(ConfusionMatrix.from_matrix, matrix)


def test_wrong_number_of_class_names_rejected() -> None:
    msg = raises_input_error(computed(MATRIX_A).to_dict, ["a", "b"])
    assert "2 class names for 3 classes" in msg


# --- reporting ------------------------------------------------------------------------

def test_to_dict_is_json_with_nan_as_none() -> None:
    d = computed(MATRIX_B).to_dict(["bg", "cat", "dog", "cow"])
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["mean_iou"] == pytest.approx(5 / 12) and d["num_pixels"] == 7
    assert d["iou"][2] == 0.0 and d["iou"][3] is None and d["accuracy"][2] is None
    assert d["class_names"] == ["bg", "cat", "dog", "cow"]
    assert d["present"] == [True, True, True, False]
    assert type(d["fw_iou"]) is float and type(d["num_pixels"]) is int


def test_empty_to_dict_is_all_none() -> None:
    d = ConfusionMatrix(2).compute().to_dict()
    assert [d[k] for k in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou")] == [None] * 4
    assert d["class_names"] == ["0", "1"]


def test_format_table_shows_metrics_and_classes() -> None:
    table = computed(MATRIX_B).format_table(["background", "cat", "dog", "cow"])
    lines = table.splitlines()
    assert lines[0].startswith("pixel accuracy") and lines[0].endswith("71.4%")  # 5/7
    assert lines[2].startswith("mean IU") and lines[2].endswith("41.7%")  # 5/12
    assert lines[3].startswith("f.w. IU") and lines[3].endswith("64.3%")  # 9/14
    assert lines[-4].split() == ["background", "50.0%", "66.7%"]
    assert lines[-2].split() == ["dog", "0.0%", "—"]
    assert lines[-1].split() == ["cow", "—", "—"]


# --- packaging ------------------------------------------------------------------------

def test_import_does_not_pull_in_torch() -> None:
    code = "import fcn_edge.metrics, sys; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
