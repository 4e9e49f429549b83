"""Checkpoints to export: a real fcn-edge checkpoint whose score layers are not at zero, so
that labels vary across the image and parity is tested on something."""
from __future__ import annotations

from pathlib import Path

import pytest

from support import make_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")
