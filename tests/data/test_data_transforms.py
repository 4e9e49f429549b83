"""TrainAugment (§4.3 mirroring and jittering), pad_to and normalize."""
from __future__ import annotations

import numpy as np
import pytest

from fcn_edge.data import (IMAGENET_MEAN, IMAGENET_STD, TrainAugment, normalize, open_dataset,
                           pad_to)
from fcn_edge.errors import InputError
from fcn_edge.runtime import processing

H, W = 40, 56


def _coded_pair() -> tuple[np.ndarray, np.ndarray]:
    """An image whose pixels encode their own (row, col), and a mask derived from them, so
    any misalignment between image and mask shows."""
    rows, cols = np.mgrid[:H, :W]
    image = np.stack([rows + 1, cols + 1, (rows * 7 + cols) % 200 + 50], -1).astype(np.uint8)
    return image, ((rows * 3 + cols) % 20).astype(np.uint8)


def _label_of(image: np.ndarray) -> np.ndarray:
    rows, cols = image[..., 0].astype(int) - 1, image[..., 1].astype(int) - 1
    return ((rows * 3 + cols) % 20).astype(np.uint8)


def test_mirror_flips_image_and_mask_together():
    image, mask = _coded_pair()
    augment = TrainAugment(mirror=True, translate=0)
    flipped = 0
    for seed in range(20):
        out_image, out_mask = augment(image, mask, np.random.default_rng(seed))
        if np.array_equal(out_image, image[:, ::-1]):
            flipped += 1
            assert np.array_equal(out_mask, mask[:, ::-1])
        else:
            assert np.array_equal(out_image, image) and np.array_equal(out_mask, mask)
    assert 3 <= flipped <= 17  # about half the time
    same = TrainAugment(mirror=False, translate=0)(image, mask, np.random.default_rng(0))
    assert np.array_equal(same[0], image) and np.array_equal(same[1], mask)


def test_translation_keeps_pixels_and_labels_aligned_and_ignores_shifted_in():
    image, mask = _coded_pair()
    augment = TrainAugment(mirror=False, translate=32)
    shifts = set()
    for seed in range(30):
        out_image, out_mask = augment(image, mask, np.random.default_rng(seed))
        assert out_image.shape == image.shape and out_mask.shape == mask.shape
        assert out_image.flags.c_contiguous and out_mask.dtype == np.uint8
        valid = out_image[..., 0] > 0  # real pixels have row + 1 ≥ 1; padding is 0
        assert np.array_equal(out_mask[valid], _label_of(out_image)[valid])
        assert (out_mask[~valid] == 255).all() and (out_image[~valid] == 0).all()
        ys, xs = np.nonzero(valid)
        if ys.size:  # the shift, read from where pixel (row, col) landed
            dy = ys[0] - (out_image[ys[0], xs[0], 0] - 1)
            dx = xs[0] - (out_image[ys[0], xs[0], 1] - 1)
            assert abs(dy) <= 32 and abs(dx) <= 32
            shifts.add((int(dy), int(dx)))
    assert len(shifts) > 10  # really random


def test_mirror_and_translation_together_stay_aligned():
    image, mask = _coded_pair()
    augment = TrainAugment(mirror=True, translate=8)
    for seed in range(10):
        out_image, out_mask = augment(image, mask, np.random.default_rng(seed))
        valid = out_image[..., 0] > 0
        assert np.array_equal(out_mask[valid], _label_of(out_image)[valid])


def test_scale_and_crop_give_the_requested_size():
    image, mask = _coded_pair()
    augment = TrainAugment(mirror=False, translate=0, scale=(0.5, 2.0), crop=(32, 48))
    sizes = set()
    for seed in range(10):
        out_image, out_mask = augment(image, mask, np.random.default_rng(seed))
        assert out_image.shape == (32, 48, 3) and out_mask.shape == (32, 48)
        assert set(np.unique(out_mask)) <= set(range(20)) | {255}  # nearest: no new labels
        sizes.add(int((out_mask == 255).sum()))
    assert len(sizes) > 1  # small scales are padded with ignore, large ones are not
    fixed = TrainAugment(mirror=False, translate=0, scale=(0.5, 0.5))
    assert fixed(image, mask, np.random.default_rng(0))[1].shape == (20, 28)


def test_crop_larger_than_the_image_pads_with_ignore():
    image, mask = _coded_pair()
    out_image, out_mask = TrainAugment(mirror=False, translate=0, crop=(64, 64))(
        image, mask, np.random.default_rng(1))
    assert out_image.shape == (64, 64, 3)
    assert np.array_equal(out_mask[:H, :W], mask) and (out_mask[H:] == 255).all()
    assert (out_mask[:, W:] == 255).all() and (out_image[H:] == 0).all()


def test_pad_to():
    image, mask = _coded_pair()
    padded_image, padded_mask = pad_to(image, mask, 48, 60, ignore_index=250)
    assert padded_image.shape == (48, 60, 3) and padded_mask.shape == (48, 60)
    assert np.array_equal(padded_image[:H, :W], image) and (padded_image[H:] == 0).all()
    assert (padded_mask[:, W:] == 250).all()
    with pytest.raises(InputError, match="does not fit"):
        pad_to(image, mask, 30, 60)


def test_normalize_on_a_hand_computed_pixel():
    image = np.zeros((2, 3, 3), np.uint8)
    image[1, 2] = (255, 128, 0)
    x = normalize(image)
    assert x.shape == (3, 2, 3) and x.dtype == np.float32 and x.flags.c_contiguous
    expected = [(1 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (0 - 0.406) / 0.225]
    assert np.allclose(x[:, 1, 2], expected, atol=1e-6)  # 2.2489, 0.2048, -1.8044
    assert np.allclose(x[:, 0, 0], [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225], atol=1e-6)
    assert (IMAGENET_MEAN, IMAGENET_STD) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    plain = normalize(image, mean=(0, 0, 0), std=(1, 1, 1))
    assert np.allclose(plain[:, 1, 2], [1.0, 128 / 255, 0.0])


def test_training_normalises_a_real_sample_as_the_runtime_does():
    """Training's input is the runtime's: bit for bit what the runtime makes of the same
    image arriving as an OpenCV (BGR) frame, and (x / 255 - mean) / std to float32 rounding."""
    image = open_dataset("synthetic", "train", num_images=1, size=(37, 53))[0].image
    x = normalize(image)
    frame = np.ascontiguousarray(image[..., ::-1])
    runtime = processing.frames_to_input(frame, IMAGENET_MEAN, IMAGENET_STD, "rgb", "bgr")[0]
    assert np.array_equal(x, runtime)
    exact = (image / 255.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    np.testing.assert_allclose(x, exact.transpose(2, 0, 1), atol=2e-6)
    assert len(np.unique(image)) > 50  # a real scene: a constant image would prove little
    assert (IMAGENET_MEAN, IMAGENET_STD) == (processing.IMAGENET_MEAN, processing.IMAGENET_STD)


@pytest.mark.parametrize("kwargs", [dict(translate=-1), dict(scale=(2.0, 1.0)),
                                    dict(scale=(0.0, 1.0)), dict(crop=(0, 10)),
                                    dict(ignore_index=300)])
def test_bad_augment_settings(kwargs):
    with pytest.raises(InputError):
        TrainAugment(**kwargs)


def test_bad_arrays_are_input_errors():
    image, mask = _coded_pair()
    with pytest.raises(InputError, match="mask must be H×W uint8 matching"):
        TrainAugment()(image, mask[:-1], np.random.default_rng(0))
    with pytest.raises(InputError, match="normalize: image must be H×W×3 uint8"):
        normalize(image.astype(np.float32))


def test_augment_is_frozen():
    augment = TrainAugment()
    with pytest.raises(AttributeError):
        augment.translate = 0  # type: ignore[misc]


def test_sample_moves_every_modality_and_task_mask_with_the_image():
    """Depth and the geometric labels stay aligned with the semantic mask through scale,
    mirror, translation and crop (paper §5 data), with the same draws as image + mask alone."""
    from fcn_edge.data import ProceduralRGBD, ProceduralTwoTask, TrainAugment, geometric_labels

    augment = TrainAugment(translate=9, scale=(0.7, 1.4), crop=(40, 52))
    rgbd, two = ProceduralRGBD(3, (48, 64), seed=5)[2], ProceduralTwoTask(3, (48, 64), seed=5)[2]
    shifted_in = 0
    for seed in range(6):
        moved = augment.sample(rgbd, np.random.default_rng(seed))
        image, mask = augment(rgbd.image, rgbd.mask, np.random.default_rng(seed))
        assert np.array_equal(moved.image, image) and np.array_equal(moved.mask, mask)
        depth = moved.inputs["depth"]
        assert depth.shape == mask.shape and depth.dtype == np.float32
        # Exact alignment: an input that is the mask itself comes out equal to the moved mask
        # (both nearest), and 0 where pixels were shifted or padded in.
        probe = rgbd._replace(inputs={"depth": rgbd.mask.astype(np.float32)})
        moved = augment.sample(probe, np.random.default_rng(seed))
        valid = moved.mask != 255
        assert np.array_equal(moved.inputs["depth"][valid], moved.mask[valid].astype(np.float32))
        assert (moved.inputs["depth"][~valid] == 0).all()
        shifted_in += int((~valid).any())
        task = augment.sample(two, np.random.default_rng(seed))
        assert np.array_equal(task.masks["semantic"], task.mask)
        assert np.array_equal(task.masks["geometric"], geometric_labels(task.mask))
        assert task.inputs is None and moved.masks is None and task.masks is not None
    assert shifted_in > 0  # the fill rule was exercised


def test_sample_refuses_a_modality_of_another_size():
    from fcn_edge.data import ProceduralRGBD, TrainAugment

    sample = ProceduralRGBD(1, (32, 32))[0]
    bad = sample._replace(inputs={"depth": np.zeros((16, 16), np.float32)})
    with pytest.raises(InputError, match="'depth' is"):
        TrainAugment().sample(bad, np.random.default_rng(0))
