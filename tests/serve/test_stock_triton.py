"""The repository ``fcn-edge export --triton-repo DIR --triton-platform python`` writes, run by the
real tritonserver PyTriton bundles, started on DIR as any Triton is (``tritonserver
--model-repository DIR``, through ``TritonServer``), not through ``fcn-edge serve``: queried over
HTTP and gRPC with tritonclient, its labels those of an in-process Segmenter on the same
artifact, its config's parameters the artifact's classes and palette.

And exporting into a repository a live Triton polls: Triton takes every subfolder of its
repository for a model, a hidden one too (``test_triton_takes_a_hidden_folder_for_a_model``), so
the export stages the model folder beside the repository; the server polling it never sees the
staging folder, never logs a failed load, stays ready, and serves the new model once it is
renamed in. Real server and clients on 127.0.0.1 only.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from fcn_edge.cli import main
from fcn_edge.data import render_scene
from fcn_edge.export.staging import STAGING_PREFIX
from fcn_edge.runtime import Segmenter
from fcn_edge.runtime.metadata import ArtifactMeta

from faults import start_cli
from support import make_checkpoint

httpclient = pytest.importorskip("tritonclient.http", reason="the serve extra is not installed")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="the serve extra is not installed")
from tritonclient.grpc import model_config_pb2  # noqa: E402

from fcn_edge.errors import BackendUnavailable  # noqa: E402
from fcn_edge.serve.server import ServerConfig, ServerFailed, TritonServer  # noqa: E402
from fcn_edge.serve.tritonserver import find_tritonserver  # noqa: E402

try:
    find_tritonserver()
except BackendUnavailable as exc:
    pytest.skip(str(exc), allow_module_level=True)

# Any free ports; a short drain: the tests close their clients before the server stops.
ANY_PORT = ServerConfig(http_port=0, grpc_port=0, metrics_port=0, drain_timeout=5)
SIZES = ((64, 96), (50, 70))


class PollingServer(TritonServer):
    """The same server, polling its repository every second for new and changed models."""

    def _arguments(self, backends: Path) -> list[str]:
        return [*super()._arguments(backends), "--model-control-mode=poll",
                "--repository-poll-secs=1"]


def _export(checkpoint: Path, out: Path, repo: Path, *flags: str) -> list[str]:
    return ["export", str(checkpoint), "-o", str(out), "--parity-sizes", "64x96",
            "--triton-repo", str(repo), *flags]


def _frame(seed: int, size: tuple[int, int]) -> np.ndarray:
    return np.ascontiguousarray(render_scene(np.random.default_rng(seed), *size)[0][..., ::-1])


def _host(url: str) -> str:
    return url.split("://", 1)[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(the artifact, the repository) of one export with --triton-platform python."""
    tmp = tmp_path_factory.mktemp("stock")
    checkpoint = make_checkpoint(tmp / "best.pt", backbone="mobilenet_v3_small")
    assert main(_export(checkpoint, tmp / "out", tmp / "repo", "--triton-platform", "python",
                        "--triton-max-batch", "4")) == 0
    return tmp / "out" / "best.onnx", tmp / "repo"


def test_the_exported_python_model_serves_in_the_stock_server(exported):
    artifact, repo = exported
    frames = [_frame(i, size) for i, size in enumerate(SIZES)]
    with Segmenter(artifact) as seg:
        expected = [seg(frame) for frame in frames]
        meta = seg.meta
    with TritonServer(repo, ANY_PORT) as server:
        server.wait_ready()
        http = httpclient.InferenceServerClient(_host(server.http_url))
        grpc = grpcclient.InferenceServerClient(_host(server.grpc_url))
        assert http.is_model_ready("best") and grpc.is_model_ready("best")
        pair = np.stack([frames[0], frames[0][::-1].copy()])  # one request, a batch of two
        sent = httpclient.InferInput("frame", list(pair.shape), "UINT8")
        sent.set_data_from_numpy(pair)
        labels = http.infer("best", [sent]).as_numpy("labels")
        with Segmenter(artifact) as seg:
            flipped = seg(pair[1])
        np.testing.assert_array_equal(labels, np.stack([expected[0], flipped]))
        sent = grpcclient.InferInput("frame", [1, *frames[1].shape], "UINT8")
        sent.set_data_from_numpy(frames[1][None])
        np.testing.assert_array_equal(grpc.infer("best", [sent]).as_numpy("labels")[0],
                                      expected[1])
        config = grpc.get_model_config("best").config
        http.close()
        grpc.close()
    params = {key: value.string_value for key, value in config.parameters.items()}
    served = ArtifactMeta.from_props(params)
    assert (served.classes, served.palette) == (meta.classes, meta.palette)
    assert (config.backend, config.max_batch_size) == ("python", 4)


def test_an_onnxruntime_repository_still_validates(exported, tmp_path):
    """The default platform's config, parsed strictly by Triton's own schema. The bundled
    tritonserver has only the Python backend (no ONNX Runtime backend), so this one is not
    loaded here; NVIDIA's containers load it."""
    artifact, _ = exported
    checkpoint = make_checkpoint(tmp_path / "best.pt", backbone="mobilenet_v3_small")
    assert main(_export(checkpoint, tmp_path / "out", tmp_path / "repo", "--argmax")) == 0
    text = (tmp_path / "repo" / "best_argmax" / "config.pbtxt").read_text("utf-8")
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert (config.platform, config.max_batch_size) == ("onnxruntime_onnx", 0)
    assert [(t.name, list(t.dims)) for t in config.output] == [("labels", [-1, -1, -1])]
    assert ArtifactMeta.from_props({k: v.string_value for k, v in config.parameters.items()}) \
        .classes == Segmenter(artifact).meta.classes


def test_triton_takes_a_hidden_folder_for_a_model(exported, tmp_path):
    """Why the export never stages inside a repository: a hidden folder there is a model to
    Triton, which fails to load it, and the server (--exit-on-error, Triton's default) stops."""
    _, repo = exported
    shutil.copytree(repo / "best", tmp_path / "repo" / "best")
    (tmp_path / "repo" / f"{STAGING_PREFIX}x.partial" / "best").mkdir(parents=True)
    server = TritonServer(tmp_path / "repo", ANY_PORT)
    with pytest.raises(ServerFailed, match=re.escape(f"failed to load model '{STAGING_PREFIX}")):
        with server:
            server.wait_ready(60)


def _readiness(client, seconds: float) -> list[bool]:
    """Whether the server answers ready, every 0.1 s for ``seconds``."""
    seen, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            seen.append(client.is_server_ready())
        except Exception:  # noqa: BLE001 - a refused connection counts as not ready
            seen.append(False)
        time.sleep(0.1)
    return seen


def _stop_when_staging(proc, where: Path, timeout: float = 240) -> Path:
    """SIGSTOP the export as soon as a staging folder appears under ``where``: it then stays
    there, as a slow disk would keep it, for as many polls as the test lets pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(where.glob(f"{STAGING_PREFIX}*")) + list(where.glob(f"*/{STAGING_PREFIX}*"))
        if found:
            os.kill(proc.pid, signal.SIGSTOP)
            return found[0]
        time.sleep(0.005)
    raise AssertionError(f"no staging folder appeared (export ended: {proc.poll()})")


def test_exporting_into_a_repository_a_server_polls(tmp_path):
    """The server polls every second; the export is stopped (SIGSTOP) for three polls as soon
    as its staging folder exists. The server never reports a load failure, stays ready, and serves the new
    model once it is renamed into the repository."""
    checkpoint = make_checkpoint(tmp_path / "best.pt", backbone="mobilenet_v3_small")
    serving, repo = tmp_path / "serving", tmp_path / "serving" / "repo"
    repo.mkdir(parents=True)
    log = tmp_path / "tritonserver.log"
    with PollingServer(repo, replace(ANY_PORT, log_file=str(log))) as server:
        server.wait_ready()
        client = httpclient.InferenceServerClient(_host(server.http_url))
        proc = start_cli(_export(checkpoint, tmp_path / "out", repo, "--triton-platform",
                                 "python"))
        try:
            staged = _stop_when_staging(proc, serving)
            seen = _readiness(client, 3.5)  # three polls while the staging folder exists
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        deadline = time.monotonic() + 60
        while not client.is_model_ready("best") and time.monotonic() < deadline:
            time.sleep(0.2)
        frame = _frame(3, SIZES[0])
        sent = httpclient.InferInput("frame", [1, *frame.shape], "UINT8")
        sent.set_data_from_numpy(frame[None])
        labels = client.infer("best", [sent]).as_numpy("labels")[0]
        index = client.get_model_repository_index()
        client.close()
    text = log.read_text("utf-8", "replace")
    assert "failed to load" not in text and STAGING_PREFIX not in text, text[-3000:]
    assert all(seen), f"not ready {seen.count(False)} of {len(seen)} times while staging"
    assert staged.parent == serving  # beside the repository, not in it
    with Segmenter(tmp_path / "out" / "best.onnx") as seg:
        np.testing.assert_array_equal(labels, seg(frame))
    assert [(m["name"], m.get("state")) for m in index] == [("best", "READY")]
