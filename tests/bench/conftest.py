"""Shared by the bench tests: one real checkpoint, and a writer of small labelled folders
(``images/`` + ``masks/`` + ``classes.txt``, the ``folder`` layout) for mean IU on known truth."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import pytest

from fcn_edge.data import PROCEDURAL_CLASSES

from support import make_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A real fcn-edge FCN-8s checkpoint (8 procedural classes, score layers not at zero)."""
    return make_checkpoint(tmp_path_factory.mktemp("bench_ckpt") / "best.pt")


@pytest.fixture(scope="module")
def restore_torch_threads():
    """For modules that bench with ``threads``: the bench sets torch's thread count (a process-
    wide setting); the next module gets back what it had."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def write_folder() -> Callable[..., Path]:
    """``write_folder(root, frames_bgr, masks, classes=PROCEDURAL_CLASSES)``: see _write_folder."""
    return _write_folder


def _write_folder(root: Path, frames_bgr: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                  classes: Sequence[str] = PROCEDURAL_CLASSES) -> Path:
    """A ``folder``-layout data set at ``root``: ``images/i.png`` (the BGR frames as OpenCV
    writes them, lossless), ``masks/i.png`` (grayscale class ids) and ``classes.txt``."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (frame, mask) in enumerate(zip(frames_bgr, masks, strict=True)):
        assert cv2.imwrite(str(root / "images" / f"{i}.png"), frame)
        assert cv2.imwrite(str(root / "masks" / f"{i}.png"), mask.astype(np.uint8))
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    return root
