"""docs/serving.md's client code, run as written against the real tritonserver: the ten-line
client, the encoded-image variant and the classes-and-palette snippet. Only the server's
address (free ports here) and the image file (a real JPEG) are put in."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcn_edge.runtime import Segmenter
from fcn_edge.serve.repository import ServeModel, write_python_model
from fcn_edge.serve.server import ServerConfig, TritonServer
from support_triton import frames

pytest.importorskip("tritonclient.http", reason="tritonclient is in the serve extra")
DOC = Path(__file__).resolve().parents[2] / "docs" / "serving.md"


def _python_blocks(section: str) -> list[str]:
    """The ```python blocks of the docs section headed ``section``."""
    text = DOC.read_text("utf-8")
    start = text.index(section)
    end = text.find("\n#", start + len(section))
    body = text[start:end if end > 0 else None]
    return re.findall(r"```python\n(.*?)```", body, re.S)


@pytest.fixture(scope="module")
def server(artifact, tritonserver, tmp_path_factory):
    repo = tmp_path_factory.mktemp("docs") / "models"
    write_python_model(repo, artifact, ServeModel())
    config = ServerConfig(http_port=0, grpc_port=0, metrics_port=0, drain_timeout=5,
                          start_timeout=60)
    with TritonServer(repo, config) as running:
        running.wait_ready()
        yield running


def test_the_documented_client_gets_the_segmenter_s_labels(server, artifact, tmp_path):
    client, image, classes = (_python_blocks("## A client in ten lines")
                              + _python_blocks("### Classes and palette"))
    assert len(client.strip().splitlines()) <= 10
    photo = tmp_path / "street.jpg"
    cv2.imwrite(str(photo), frames(1)[0])
    host = server.http_url.split("://", 1)[1]
    script = "\n".join([client, image, classes,
                        "np.save('labels.npy', labels)", "print('classes', len(meta.classes))"])
    script = script.replace("127.0.0.1:8000", host).replace('"street.jpg"', repr(str(photo)))
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with Segmenter(artifact) as seg:
        expected = seg(cv2.imread(str(photo)))
        assert f"classes {len(seg.classes)}" in done.stdout
    assert np.array_equal(np.load(tmp_path / "labels.npy"), expected)
