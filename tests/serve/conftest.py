"""Shared by the tests that start the real tritonserver (PyTriton's): one small exported
artifact, a view of the machine's processes (to prove nothing outlives a server), and a
skip where the serve extra is not installed. Servers listen on 127.0.0.1, on free ports."""
from __future__ import annotations

from pathlib import Path

import pytest

from support_multi_io import export_artifact, make_multi_checkpoint


@pytest.fixture(scope="session")
def artifact(tmp_path_factory) -> Path:
    """An RGB, one-task, 8-class FCN-16s exported raw-IO + argmax (uint8 frames in, labels
    out): what `fcn-edge export --raw-io --argmax` deploys."""
    out = tmp_path_factory.mktemp("served")
    ckpt = make_multi_checkpoint(out / "one.pt", inputs=(("rgb", 3),), heads=())
    return export_artifact(ckpt, out, raw_io=True, argmax=True)


@pytest.fixture(scope="session")
def tritonserver():
    """The bundled tritonserver, or a skip naming the extra (the tests need a real server)."""
    from fcn_edge.errors import BackendUnavailable
    from fcn_edge.serve.tritonserver import find_tritonserver

    try:
        return find_tritonserver()
    except BackendUnavailable as exc:
        pytest.skip(f"no tritonserver here: {exc}")
