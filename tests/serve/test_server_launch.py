"""The launcher of the real tritonserver (fcn_edge.serve.server.TritonServer): it starts on a
Python-backend repository, answers ready, and stops leaving no process, no shared memory and
no folder behind; a model that cannot load is one line, its own reason, from the server's log.
Every start is bounded in time; servers listen on 127.0.0.1, on free ports."""
from __future__ import annotations

import http.client
import socket
import sys
import sysconfig
from pathlib import Path

import pytest

from fcn_edge.errors import BackendUnavailable, InputError
from fcn_edge.serve.repository import ServeModel, write_python_model
from fcn_edge.serve.server import ServerConfig, ServerFailed, TritonServer
from fcn_edge.serve.tritonserver import find_tritonserver, last_error
from support_triton import server_processes

pytestmark = pytest.mark.usefixtures("tritonserver")

FREE_PORTS = ServerConfig(http_port=0, grpc_port=0, metrics_port=0, drain_timeout=5,
                          start_timeout=60)


def _get(url: str) -> tuple[int, str]:
    host, _, rest = url.removeprefix("http://").partition("/")
    conn = http.client.HTTPConnection(*host.split(":"), timeout=10)
    try:
        conn.request("GET", "/" + rest)
        answer = conn.getresponse()
        return answer.status, answer.read().decode()
    finally:
        conn.close()


def _shm(prefix: str) -> list[Path]:
    return list(Path("/dev/shm").glob(prefix + "*"))


def test_starts_answers_and_stops_leaving_nothing(artifact, tmp_path):
    repo = tmp_path / "models"
    write_python_model(repo, artifact, ServeModel(name="seg"))
    server = TritonServer(repo, FREE_PORTS)
    with server:
        server.wait_ready()
        pid, workspace, shm_prefix = server.pid, server.workspace, server._shm_prefix
        running = server_processes(pid)
        assert {p.name for p in running} >= {"tritonserver", "triton_python_b"}, running
        assert _shm(shm_prefix), "the Python backend's shared memory carries our prefix"
        own = _own_libpython()
        assert own is None or _libpython(running) == {own}
        assert _get(f"{server.http_url}/v2/models/seg/ready")[0] == 200
        status, metrics = _get(server.metrics_url)
        assert status == 200 and 'nv_inference_count{model="seg"' in metrics
        ports = [int(url.rsplit(":", 1)[1].split("/")[0])
                 for url in (server.http_url, server.grpc_url, server.metrics_url)]
        assert 0 not in ports and len(set(ports)) == 3
    assert server_processes(pid) == []
    assert not workspace.exists() and _shm(shm_prefix) == []
    for port in ports:  # released: a new server may listen there
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    server.stop()  # twice is harmless


def _own_libpython() -> str | None:
    """This interpreter's shared libpython, where it has one."""
    own = Path(sysconfig.get_config_var("LIBDIR") or "/") / (
        sysconfig.get_config_var("INSTSONAME") or "-")
    return str(own.resolve()) if own.is_file() else None


def _libpython(running) -> set[str]:
    """The libpython the Python backend's stub loaded: not the system's 3.11.2 under a pyenv
    3.11.7 (its stdlib then fails in multiprocessing: RLock has no _recursion_count)."""
    stubs = [p for p in running if p.name.startswith("triton_python")]
    return {line.split()[-1] for p in stubs
            for line in Path(f"/proc/{p.pid}/maps").read_text().splitlines()
            if "libpython" in line}


def test_a_model_that_cannot_load_fails_the_start_with_its_reason(artifact, tmp_path):
    repo = tmp_path / "models"
    folder = write_python_model(repo, artifact, ServeModel(name="broken"))
    (folder / "1" / artifact.name).unlink()  # the model's initialize cannot open it
    server = TritonServer(repo, FREE_PORTS)
    with pytest.raises(ServerFailed) as failed, server:
        pid = server.pid
        server.wait_ready()
    message = str(failed.value)
    assert message.startswith("tritonserver did not start: failed to load 'broken'"), message
    assert "no such model file" in message and "\n" not in message
    assert server_processes(pid) == []  # its stub, which outlives a failed server, too


def test_a_port_in_use_is_one_line_before_the_server_starts(tmp_path):
    (tmp_path / "models").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = TritonServer(tmp_path / "models", ServerConfig(
            http_port=0, grpc_port=port, metrics_port=0))
        with pytest.raises(InputError, match=rf"^--grpc-port {port}: cannot listen there: "
                                             rf"port {port} is in use"):
            server.start()
    assert server.pid is None and server.workspace is None


@pytest.mark.parametrize("host, why", [
    ("192.0.2.1", "192.0.2.1 is not an address of this machine"),  # TEST-NET-1: never ours
    ("no-such-host.invalid", "no such host")])
def test_a_host_that_is_not_this_machines_is_one_line_naming_host(tmp_path, host, why):
    server = TritonServer(tmp_path, ServerConfig(host=host, http_port=0, grpc_port=0,
                                                 metrics_port=0))
    with pytest.raises(InputError, match=rf"^--host {host}: cannot listen there: {why}"):
        server.start()


def test_ports_must_differ_and_be_ports():
    with pytest.raises(InputError, match="--http-port, --grpc-port and --metrics-port must "
                                         "differ, got 9000, 9000, 8002"):
        ServerConfig(http_port=9000, grpc_port=9000)
    with pytest.raises(InputError, match="--metrics-port must be an integer from 0 to 65535"):
        ServerConfig(metrics_port=70000)


def test_a_pytriton_without_a_stub_for_this_python_is_one_line(tmp_path, monkeypatch):
    """An installed PyTriton whose wheel predates this Python (its stubs stop at 3.8)."""
    dist = tmp_path / "pytriton" / "tritonserver"
    for name in ("bin/tritonserver", "backends/python/libtriton_python.so",
                 "python_backend_stubs/3.8/triton_python_backend_stub"):
        (dist / name).parent.mkdir(parents=True, exist_ok=True)
        (dist / name).write_bytes(b"")
    (tmp_path / "pytriton" / "__init__.py").write_text("")
    monkeypatch.delitem(sys.modules, "pytriton", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    with pytest.raises(BackendUnavailable, match=rf"^PyTriton's Python backend has no stub "
                                                 rf"for Python {version} \(it has 3\.8\): "):
        find_tritonserver()


def test_the_reason_read_from_a_log_is_its_last_real_error():
    log = "\n".join([
        'E1205 14:17:15.517342 671 server.cc:241] "CudaDriverHelper has not been initialized."',
        'E1205 14:17:17.334422 671 model_lifecycle.cc:642] "failed to load \'bad\' version 1: '
        'Internal: ValueError: cannot open x.onnx\\n\\nAt:\\n  /m/model.py(14): initialize\\n"',
        "I1205 14:17:19.337193 671 server.cc:345] \"Timeout 3: Found 0 live models\"",
        "error: creating server: Internal - failed to load all models"])
    assert last_error(log) == "failed to load 'bad' version 1: ValueError: cannot open x.onnx"
    assert last_error(log.splitlines()[0] + "\nerror: creating server: X") == \
        "creating server: X"
    assert last_error("") == "no output"
