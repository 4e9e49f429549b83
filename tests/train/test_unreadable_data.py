"""An unreadable image in a data set is named in one line by `fcn-edge train` (with loader
worker processes too) and `fcn-edge eval`, never buried in a worker's traceback (issue 16)."""
from __future__ import annotations

import pytest

from faults import run_cli
from fcn_edge.data import open_dataset, write_voc


@pytest.fixture(scope="module")
def broken_voc(tmp_path_factory):
    """A VOC folder of three scenes, the second one's JPEG not an image."""
    root = tmp_path_factory.mktemp("voc")
    write_voc(open_dataset("synthetic", "val", num_images=3, size=(48, 64), seed=1), root,
              split="val")
    broken = sorted((root / "JPEGImages").glob("*.jpg"))[1]
    broken.write_bytes(b"not a jpeg")
    return root, broken


def _message(broken) -> str:
    return f"{broken}: unreadable image (corrupt, empty or not an image format OpenCV decodes)"


@pytest.mark.parametrize("workers", ["0", "2"])
def test_train_names_the_unreadable_image_in_one_line(broken_voc, workers, tmp_path):
    root, broken = broken_voc
    done = run_cli(["train", "--data", root, "--train-split", "val", "--val-split", "val",
                    "--epochs", "1", "--device", "cpu", "--quiet", "--workers", workers,
                    "--threads", "1", "--out", tmp_path / "run"], timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"fcn-edge train: {_message(broken)}"]


def test_eval_names_the_unreadable_image_in_one_line(broken_voc, tmp_path):
    from support import make_checkpoint

    root, broken = broken_voc
    checkpoint = make_checkpoint(tmp_path / "m.pt")
    done = run_cli(["eval", checkpoint, "--data", root, "--split", "val", "--device", "cpu"])
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"fcn-edge eval: {_message(broken)}"]
