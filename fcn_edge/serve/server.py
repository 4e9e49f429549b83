"""``fcn-edge serve``: a real Triton Inference Server on an fcn-edge model repository.

:func:`serve_model` writes a Python-backend repository for one artifact
(:func:`~fcn_edge.serve.repository.write_python_model`) into a temporary folder;
:func:`serve_repository` takes one already written (``fcn-edge export --triton-repo DIR
--triton-platform python``). Either starts :class:`TritonServer` — the tritonserver PyTriton
bundles (:mod:`~fcn_edge.serve.tritonserver`) as a child process — waits until every model is
ready, serves until Ctrl-C or SIGTERM (the CLI raises KeyboardInterrupt for both), then drains:
tritonserver, sent SIGINT, finishes the requests in flight (``drain_timeout`` bounds that) and
stops; whatever is left of its process group (the Python backend's stub processes) is killed,
and its shared-memory regions and private folder are removed. Nothing outlives the server.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, ClassVar, Mapping

from ..errors import FcnEdgeError, InputError
from ..runtime.bounds import Bound, Rule, Threads, check_bounds
from ..runtime.serve_address import DEFAULT_HOST, bind_error, family
from .repository import MAX_BATCH, MAX_DELAY_US, MAX_INSTANCES, ServeModel, write_python_model
from .tritonserver import find_tritonserver, last_error, prepare_backends, server_env

__all__ = ["ServeFlags", "ServerConfig", "ServerFailed", "TritonServer", "remove_stale_folders",
           "serve_model", "serve_repository"]

_PORT = Bound(0, 65535, zero="any free port")
#: Seconds granted past the drain for unloading the models and stopping the stubs.
_UNLOAD_GRACE = 15.0
_SHM = Path("/dev/shm")
#: The temporary folders' names: ``fcn-edge-serve-<pid>-…``, so that a later start can remove
#: those of a process that was killed (``kill -9`` runs no clean-up).
_FOLDER = "fcn-edge-serve"


class ServerFailed(FcnEdgeError):
    """tritonserver did not start, or stopped on its own; the message is its log's reason."""


@dataclass(frozen=True)
class ServerConfig:
    """Where and how tritonserver listens and stops.

    ``host`` is the address all three endpoints listen on (127.0.0.1, this machine only, as
    the live view's ``--serve``; 0.0.0.0 for every interface). Ports are Triton's defaults;
    0 takes any free port (the server's ``*_url`` say which). ``drain_timeout``: seconds a stop
    waits for requests in flight (Triton's ``--exit-timeout-secs``; Kubernetes' grace is
    30 s). ``start_timeout``: seconds allowed to load every model. ``log_file``: where the
    server's own log goes (default: its private folder, removed with it).
    """

    host: str = DEFAULT_HOST
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    drain_timeout: int = 30
    start_timeout: float = 120.0
    log_file: str | None = None

    BOUNDS: ClassVar[Mapping[str, Rule]] = {
        "http_port": _PORT, "grpc_port": _PORT, "metrics_port": _PORT,
        "drain_timeout": Bound(0, 3600), "start_timeout": Bound(0, 3600, integer=False,
                                                                low_open=True)}

    def __post_init__(self) -> None:
        check_bounds(self, self.BOUNDS, flags=True)
        if not self.host.strip():
            raise InputError("--host is empty: give an address of this machine (127.0.0.1, "
                             "or 0.0.0.0 for every interface)")
        ports = [p for p in (self.http_port, self.grpc_port, self.metrics_port) if p]
        if len(set(ports)) < len(ports):
            raise InputError(f"--http-port, --grpc-port and --metrics-port must differ, got "
                             f"{self.http_port}, {self.grpc_port}, {self.metrics_port}")


class ServeFlags:
    """The ranges ``fcn-edge serve`` reads :class:`ServeModel`'s settings with (by the flag's
    ``dest``), so a bad value names its flag while parsing; ServeModel checks them again."""

    BOUNDS: ClassVar[Mapping[str, Rule]] = {
        "max_batch_size": Bound(1, MAX_BATCH), "instances": Bound(1, MAX_INSTANCES),
        "max_delay_ms": Bound(0, MAX_DELAY_US / 1000, integer=False),
        "threads": Threads(zero="the engine's default")}


class TritonServer:
    """The bundled tritonserver on ``repo_dir``, as a child process in its own process group:
    ``start()``, ``wait_ready()``, then ``wait()`` or ``stop()`` — or ``with``, which starts
    and always stops. Start it from a thread that outlives it: the server is told to stop
    when that thread ends (Linux's parent-death signal), so a killed fcn-edge leaves nothing."""

    def __init__(self, repo_dir: str | Path, config: ServerConfig | None = None) -> None:
        self.repo_dir = Path(repo_dir).resolve()
        self.config = config or ServerConfig()
        self.workspace: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._log_path: Path | None = None
        self._log_start = 0
        self._id = f"fcn-edge-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    # --- where it listens ----------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def http_url(self) -> str:
        return f"http://{_netloc(self.config.host, self.config.http_port)}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{_netloc(self.config.host, self.config.grpc_port)}"

    @property
    def metrics_url(self) -> str:
        return f"http://{_netloc(self.config.host, self.config.metrics_port)}/metrics"

    # --- its life ------------------------------------------------------------------------
    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start tritonserver (ports checked first: one in use is one line, at once)."""
        if self._proc is not None:
            raise RuntimeError("this server was already started")
        dist = find_tritonserver()
        self.config = _claim_ports(self.config)
        remove_stale_folders()
        self.workspace = Path(tempfile.mkdtemp(prefix=f"{_FOLDER}-{os.getpid()}-"))
        try:
            backends = prepare_backends(dist, self.workspace)
            self._log_path = Path(self.config.log_file or self.workspace / "tritonserver.log")
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._log_path, "ab") as log:
                self._log_start = log.tell()
                self._proc = subprocess.Popen(
                    [str(dist.binary), *self._arguments(backends)], cwd=self.workspace,
                    env=server_env(dist), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=_stop_with_parent())
        except BaseException:
            self.stop()
            raise

    def _arguments(self, backends: Path) -> list[str]:
        c = self.config
        return ["--id", self._id, "--model-repository", str(self.repo_dir),
                "--backend-directory", str(backends),
                "--http-address", c.host, "--http-port", str(c.http_port),
                "--grpc-address", c.host, "--grpc-port", str(c.grpc_port),
                "--metrics-address", c.host, "--metrics-port", str(c.metrics_port),
                "--exit-timeout-secs", str(c.drain_timeout),
                # Our own shared-memory names, so that a killed stub's regions can be removed.
                "--backend-config", f"python,shm-region-prefix-name={self._shm_prefix}"]

    @property
    def _shm_prefix(self) -> str:
        return f"{self._id}-shm-"

    def wait_ready(self, timeout: float | None = None) -> None:
        """Return once the server answers ready (every model loaded); ServerFailed with its
        log's reason if it stops first, or if ``timeout`` (default ``start_timeout``) passes."""
        timeout = self.config.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not self._answers_ready():
            if self._proc is None or self._proc.poll() is not None:
                raise ServerFailed(f"tritonserver did not start: {self._reason()}")
            if time.monotonic() > deadline:
                raise ServerFailed(f"tritonserver was not ready after {timeout:g} s (its "
                                   f"log: {self._reason()}); raise --start-timeout")
            time.sleep(0.1)

    def _answers_ready(self) -> bool:
        """Ready, and it is this server answering (its ``--id``), not another on the port."""
        try:
            conn = http.client.HTTPConnection(_connect_host(self.config.host),
                                              self.config.http_port, timeout=2)
            try:
                conn.request("GET", "/v2")
                about = conn.getresponse()
                name = json.loads(about.read() or b"{}").get("name")
                conn.request("GET", "/v2/health/ready")
                ready = conn.getresponse()
                ready.read()
            finally:
                conn.close()
        except (OSError, http.client.HTTPException, ValueError):
            return False
        return about.status == 200 and name == self._id and ready.status == 200

    def wait(self) -> None:
        """Block while the server runs (Ctrl-C or SIGTERM interrupt it); its stopping on its
        own is ServerFailed with the reason."""
        assert self._proc is not None, "start() first"
        code = self._proc.wait()
        raise ServerFailed(f"tritonserver stopped ({_exit_text(code)}): {self._reason()}")

    def stop(self) -> None:
        """Drain and stop: SIGINT, ``drain_timeout`` (plus time to unload) for the requests in
        flight, then SIGKILL for whatever is left of the process group; then the shared
        memory and the private folder are removed. Safe to call twice; a second Ctrl-C while
        it drains skips to the kill."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(self.config.drain_timeout + _UNLOAD_GRACE)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc is not None:
                _kill_group(proc)
            for region in _SHM.glob(self._shm_prefix + "*"):
                region.unlink(missing_ok=True)
            if self.workspace is not None:
                shutil.rmtree(self.workspace, ignore_errors=True)

    def _reason(self) -> str:
        """Why the server stopped, from its log (what this start wrote of it)."""
        try:
            with open(self._log_path, "rb") as log:
                log.seek(self._log_start)
                return last_error(log.read().decode("utf-8", "replace"))
        except (OSError, TypeError):
            return "no log"


def serve_model(model_path: str | Path, settings: ServeModel | None = None,
                config: ServerConfig | None = None,
                on_ready: Callable[[str], None] = print) -> None:
    """Serve one artifact (ONNX, engine, checkpoint) until Ctrl-C or SIGTERM, then drain."""
    settings = settings or ServeModel()
    find_tritonserver()  # a missing extra, or a port in use, is said before the model loads
    config = _claim_ports(config or ServerConfig())
    with tempfile.TemporaryDirectory(prefix=f"{_FOLDER}-{os.getpid()}-repo-") as folder:
        repo = Path(folder) / "models"
        write_python_model(repo, model_path, settings)
        _serve(repo, config, f"{settings.name} ({Path(model_path).name})", on_ready)


def serve_repository(repo_dir: str | Path, config: ServerConfig | None = None,
                     on_ready: Callable[[str], None] = print) -> None:
    """Serve every model of a Triton repository until Ctrl-C or SIGTERM, then drain."""
    repo = Path(repo_dir)
    names = sorted(p.parent.name for p in repo.glob("*/config.pbtxt")) if repo.is_dir() else []
    if not names:
        raise InputError(f"--repository {repo}: not a Triton model repository (no "
                         f"MODEL/config.pbtxt in it); write one with `fcn-edge export "
                         f"CHECKPOINT --triton-repo {repo} --triton-platform python`")
    _serve(repo, config, ", ".join(names), on_ready)


def _serve(repo: Path, config: ServerConfig | None, models: str,
           on_ready: Callable[[str], None]) -> None:
    with TritonServer(repo, config) as server:
        server.wait_ready()
        grpc = server.grpc_url.split("://", 1)[1]  # as tritonclient.grpc takes it: host:port
        on_ready(f"serving {models}: HTTP {server.http_url}, gRPC {grpc}, metrics "
                 f"{server.metrics_url} (Ctrl-C stops, after the requests in flight)")
        server.wait()


# --- ports and processes ---------------------------------------------------------------------

def _claim_ports(config: ServerConfig) -> ServerConfig:
    """``config`` with each port checked free (a bind tried and released: one in use, a host
    that is not this machine's, is one line now, not a line deep in the server's log) and
    each 0 replaced by a free port."""
    ports = {}
    with contextlib.ExitStack() as held:  # all held at once: three different free ports
        for flag in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(config, flag)
            probe = held.enter_context(socket.socket(family(config.host), socket.SOCK_STREAM))
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((config.host, port))
                probe.listen()  # listening sockets never share a port, even with REUSEADDR
            except OSError as exc:  # the host's fault is --host's, the port's its flag's
                host = isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL
                raise bind_error(config.host if host else str(port), (config.host, port), exc,
                                 flag="--host" if host else "--" + flag.replace("_", "-")
                                 ) from None
            ports[flag] = probe.getsockname()[1]
    return replace(config, **ports)


def remove_stale_folders() -> None:
    """Remove the temporary folders (the server's, a repository's copy of the artifact) of
    fcn-edge processes that no longer run: what a ``kill -9`` left."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_FOLDER}-*-*"):
        pid = folder.name.split("-")[3]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _stop_with_parent() -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM (tritonserver's clean stop) when the thread
    that started it ends. libc is loaded here, before the fork: a forked child of a threaded
    process must not import or load anything."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, signal.SIGTERM)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the server's process group (tritonserver leads it; the Python backend's stubs,
    which outlive a server that failed or was killed, are in it), then wait until it is gone."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    deadline = time.monotonic() + 10
    while group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone while we looked
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def _exit_text(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


def _connect_host(host: str) -> str:
    """Where a client on this machine reaches ``host`` (0.0.0.0 and :: are every interface)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
