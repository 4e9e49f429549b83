"""``fcn-edge serve`` as users run it: a real child process running the real tritonserver,
queried with Triton's standard clients (tritonclient) over HTTP and gRPC on 127.0.0.1.
Ctrl-C and SIGTERM finish the request in flight and leave no process behind; a server that
dies, a port in use, a missing extra and every bad flag are one line and an exit code."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fcn_edge.cli import main
from fcn_edge.runtime import Segmenter
from fcn_edge.serve.repository import ServeModel, write_python_model
from fcn_edge.serve.server import remove_stale_folders
from faults import ChildOutput, assert_stopped_by, cli_command, run_cli, start_cli
from support_triton import frames, server_processes, tritonserver_child

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient is in the serve "
                                                             "extra")
grpcclient = pytest.importorskip("tritonclient.grpc")

FREE_PORTS = ("--http-port", "0", "--grpc-port", "0", "--metrics-port", "0")
READY = r"^serving .*: HTTP http://(\S+), gRPC (\S+), metrics http://\S+/metrics"


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_server_outlives_its_test():
    """A test that fails half-way still stops the ``fcn-edge serve`` it started (its
    tritonserver follows it: the parent-death signal)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def _serving(args: list[str]) -> tuple[ChildOutput, str, str]:
    """``fcn-edge serve ARGS`` started and ready: (its output, HTTP and gRPC host:port)."""
    child = ChildOutput(start_cli(["serve", *args, *FREE_PORTS, "--drain-timeout", "10"]))
    _STARTED.append(child.proc)
    http, grpc = re.search(READY, child.wait_for(READY, timeout=90)).groups()
    return child, http, grpc


def _http_labels(url: str, batch: np.ndarray, model: str = "fcn") -> np.ndarray:
    client = httpclient.InferenceServerClient(url, network_timeout=60)
    frame = httpclient.InferInput("frame", list(batch.shape), "UINT8")
    frame.set_data_from_numpy(batch)
    return client.infer(model, [frame]).as_numpy("labels")


def _grpc_labels(url: str, batch: np.ndarray, model: str = "fcn") -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    frame = grpcclient.InferInput("frame", list(batch.shape), "UINT8")
    frame.set_data_from_numpy(batch)
    return client.infer(model, [frame], client_timeout=60).as_numpy("labels")


@pytest.mark.usefixtures("tritonserver")
def test_serve_answers_http_and_grpc_then_ctrl_c_stops_it(artifact):
    child, http, grpc = _serving([str(artifact), "--name", "seg", "--max-batch", "4"])
    server = tritonserver_child(child.proc.pid)
    batch = frames(2)
    with Segmenter(artifact) as segmenter:
        expected = np.stack(segmenter.batch(list(batch)))
    assert np.array_equal(_http_labels(http, batch, "seg"), expected)
    assert np.array_equal(_grpc_labels(grpc, batch[:1], "seg"), expected[:1])
    config = httpclient.InferenceServerClient(http).get_model_config("seg")
    assert config["max_batch_size"] == 4 and "classes" in config["parameters"]

    child.proc.send_signal(signal.SIGINT)
    code, _, err = child.finish(timeout=60)
    assert code == 130 and err.strip().splitlines()[-1] == "fcn-edge serve: interrupted", err
    assert server_processes(server.pid) == []


#: A Python model that says when it runs a request (a file beside it) and takes 2 s: a
#: request certainly in flight when the stop comes, whatever the machine's speed.
SLOW_CONFIG = """name: "slow"
backend: "python"
input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""
SLOW_MODEL = """import pathlib, time
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.marker = pathlib.Path(args["model_repository"]) / "executing"

    def execute(self, requests):
        self.marker.touch()
        time.sleep(2)
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy() * 2)]) for r in requests]
"""


@pytest.mark.usefixtures("tritonserver")
def test_sigterm_finishes_the_request_in_flight_then_stops(artifact, tmp_path):
    repo = tmp_path / "repo"
    write_python_model(repo, artifact, ServeModel(max_batch_size=8))
    (repo / "slow" / "1").mkdir(parents=True)
    (repo / "slow" / "config.pbtxt").write_text(SLOW_CONFIG)
    (repo / "slow" / "1" / "model.py").write_text(SLOW_MODEL)
    child, http, _ = _serving(["--repository", str(repo)])
    server = tritonserver_child(child.proc.pid)
    batch = frames(1)
    with Segmenter(artifact) as segmenter:  # the repository's fcn-edge model serves too
        assert np.array_equal(_http_labels(http, batch)[0], segmenter(batch[0]))
    answer: dict[str, object] = {}

    def request() -> None:
        try:
            x = httpclient.InferInput("x", [1], "FP32")
            x.set_data_from_numpy(np.array([21.0], np.float32))
            client = httpclient.InferenceServerClient(http, network_timeout=60)
            answer["y"] = client.infer("slow", [x]).as_numpy("y")
        except Exception as exc:  # noqa: BLE001 - the test reports it
            answer["error"] = exc

    client = threading.Thread(target=request)
    client.start()
    marker, deadline = repo / "slow" / "executing", time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists(), "the slow request never ran"
    child.proc.send_signal(signal.SIGTERM)  # while the model runs it
    client.join(60)
    code, _, err = child.finish(timeout=60)
    assert "error" not in answer, f"the request in flight was not answered: {answer}"
    assert answer["y"].tolist() == [42.0]
    assert_stopped_by(signal.SIGTERM, "serve", code, err)
    assert server_processes(server.pid) == []


@pytest.mark.usefixtures("tritonserver")
def test_a_server_that_dies_is_one_line_and_exit_1(artifact):
    child, _, _ = _serving([str(artifact)])
    server = tritonserver_child(child.proc.pid)
    os.kill(server.pid, signal.SIGKILL)
    code, _, err = child.finish(timeout=60)
    assert code == 1, err
    assert err.strip().splitlines()[-1].startswith(
        "fcn-edge serve: tritonserver stopped (killed by SIGKILL): "), err
    assert "Traceback" not in err
    assert server_processes(server.pid) == []  # the stubs it left are killed with its group


@pytest.mark.usefixtures("tritonserver")
def test_a_killed_serve_takes_its_server_with_it(artifact, tmp_path):
    """kill -9 cannot be caught: the server, told to stop when its parent dies (Linux's
    parent-death signal), stops on its own, and its stubs with it."""
    log = tmp_path / "logs" / "server.log"
    child, _, _ = _serving([str(artifact), "--log-file", str(log)])
    server = tritonserver_child(child.proc.pid)
    child.proc.kill()
    child.finish(timeout=30)
    deadline = time.monotonic() + 60
    while server_processes(server.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server_processes(server.pid) == []
    assert "successfully unloaded 'fcn' version 1" in log.read_text()  # a clean stop
    left = list(Path(tempfile.gettempdir()).glob(f"fcn-edge-serve-{child.proc.pid}-*"))
    assert len(left) == 2, left  # kill -9 ran no clean-up: the server's folder, the model's
    remove_stale_folders()  # what the next start does first
    assert [folder for folder in left if folder.exists()] == []


@pytest.mark.usefixtures("tritonserver")
def test_a_port_in_use_is_one_line_and_exit_1(artifact):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli(["serve", artifact, "--http-port", port, "--grpc-port", "0",
                        "--metrics-port", "0"], timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"fcn-edge serve: --http-port {port}: cannot listen there: port {port} is in use; "
        f"choose another port, or 0 for any free one"]


NO_PYTRITON = '''import sys
class NoPyTriton:  # as if nvidia-pytriton were not installed
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "pytriton":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoPyTriton())
'''


def test_without_pytriton_it_is_one_line_naming_the_extra_and_exit_2(artifact, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(NO_PYTRITON)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run(cli_command(["serve", artifact, *FREE_PORTS]), env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        'fcn-edge serve: PyTriton, whose tritonserver serves the model, is not installed: '
        'pip install "fcn-edge[serve]"']
    probe = subprocess.run([sys.executable, "-c", "import pytriton"], env=env,
                           capture_output=True, text=True)
    assert probe.returncode == 1 and "No module named 'pytriton'" in probe.stderr


def test_reading_the_serve_flags_imports_no_engine_and_no_triton():
    code = ("import sys; from fcn_edge.cli import build_parser; "
            "build_parser().parse_args(['serve', 'm.onnx', '--http-port', '0', '--threads', "
            "'1', '--max-batch', '4', '--max-delay-ms', '2']); "
            "print(sorted(m for m in ('torch', 'pytriton', 'tritonclient', 'onnxruntime') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr


@pytest.mark.parametrize("flags, message", [
    (["--http-port", "70000"],
     "--http-port must be an integer from 0 to 65535 (0: any free port), got '70000'"),
    (["--http-port", "8100", "--grpc-port", "8100"],
     "--http-port, --grpc-port and --metrics-port must differ, got 8100, 8100, 8002"),
    (["--max-batch", "0"], "--max-batch must be an integer from 1 to 256, got '0'"),
    (["--instances", "65"], "--instances must be an integer from 1 to 64, got '65'"),
    (["--max-delay-ms", "1001"], "--max-delay-ms must be a number from 0 to 1000, got '1001'"),
    (["--threads", "-1"], "--threads must be an integer from 0 to "),
    (["--drain-timeout", "x"], "--drain-timeout must be an integer from 0 to 3600, got 'x'"),
])
def test_a_bad_flag_is_one_line_and_exit_1(artifact, capsys, flags, message):
    assert main(["serve", str(artifact), *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fcn-edge serve: {message}") and err.count("\n") == 1, err


def test_model_and_repository_are_one_or_the_other(artifact, tmp_path, capsys):
    repo = tmp_path / "repo"
    write_python_model(repo, artifact)
    cases = [
        ([], "give MODEL (an .onnx, an fcn-edge .engine, a checkpoint or a zoo name) or "
             "--repository DIR"),
        ([str(artifact), "--repository", str(repo)], "give MODEL or --repository DIR, not both"),
        (["--repository", str(repo), "--max-batch", "4"],
         "--max-batch says how MODEL is served; with --repository, each model's config.pbtxt"),
        (["--repository", str(tmp_path)], f"--repository {tmp_path}: not a Triton model "
                                          f"repository"),
        ([str(tmp_path / "none.onnx"), *FREE_PORTS], f"{tmp_path / 'none.onnx'}: no such"),
        ([str(repo / "fcn" / "config.pbtxt"), *FREE_PORTS],
         f"{repo / 'fcn' / 'config.pbtxt'}: unknown kind of model '.pbtxt'"),
        ([str(artifact), "--log-file", str(repo / "fcn" / "config.pbtxt" / "x.log")],
         f"--log-file {repo / 'fcn' / 'config.pbtxt' / 'x.log'}: "
         f"{repo / 'fcn' / 'config.pbtxt'} is a file, not a folder"),
    ]
    for args, message in cases:
        assert main(["serve", *args]) == 1, args
        err = capsys.readouterr().err
        assert err.startswith(f"fcn-edge serve: {message}") and err.count("\n") == 1, err
