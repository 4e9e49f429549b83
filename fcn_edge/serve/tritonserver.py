"""The ``tritonserver`` that PyTriton's wheel bundles, made runnable by this interpreter.

PyTriton (``pip install "fcn-edge[serve]"``) ships a genuine ``tritonserver`` binary, Triton's
Python backend and one backend stub per Python version; its shared libraries sit beside the
package in ``nvidia_pytriton.libs``. Three things make it run fcn-edge's model here, as PyTriton
itself does for its own models (``pytriton/triton.py``):

* the Python backend runs ``<backend-dir>/python/triton_python_backend_stub``, so a private
  backend folder gets the stub built for this interpreter's ``major.minor`` (linked, not copied);
* the stub links ``libpython3.X.so.1.0`` and would take the system's (Debian's 3.11.2 under a
  pyenv 3.11.7 died with "'_thread.RLock' object has no attribute '_recursion_count'"), so the
  running interpreter's library folder comes first on ``LD_LIBRARY_PATH``;
* the stub's embedded Python finds its ``site-packages`` (fcn_edge, numpy, onnxruntime) through
  the ``python`` first on ``PATH``: this interpreter's folder goes first.

Nothing of PyTriton is imported (its package pulls in its whole server and client): the files
are found with ``importlib.util.find_spec``.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendUnavailable

__all__ = ["TritonDist", "find_tritonserver", "last_error", "prepare_backends", "server_env"]

INSTALL = 'pip install "fcn-edge[serve]"'
#: The Python backend's files that the stub loads from the backend folder.
_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
STUB = "triton_python_backend_stub"


@dataclass(frozen=True)
class TritonDist:
    """Where the bundled server's pieces are: the binary, the Python backend's folder, the stub
    for this Python and the bundled shared libraries."""

    binary: Path
    python_backend: Path
    stub: Path
    libs: Path


def find_tritonserver() -> TritonDist:
    """The bundled tritonserver, or BackendUnavailable saying what to install."""
    if not sys.platform.startswith("linux"):
        raise BackendUnavailable(
            "fcn-edge serve runs the tritonserver PyTriton bundles, which is built for Linux "
            "only; elsewhere serve the repository of `fcn-edge export --triton-repo DIR "
            "--triton-platform python` in NVIDIA's Triton container")
    try:
        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):  # refused by an import hook, or a broken install
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(f"PyTriton, whose tritonserver serves the model, is not "
                                 f"installed: {INSTALL}")
    package = Path(next(iter(spec.submodule_search_locations)))
    dist = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = TritonDist(binary=dist / "bin" / "tritonserver",
                       python_backend=dist / "backends" / "python",
                       stub=dist / "python_backend_stubs" / version / STUB,
                       libs=package.parent / "nvidia_pytriton.libs")
    if not found.binary.is_file() or not (found.python_backend / _BACKEND_FILES[0]).is_file():
        raise BackendUnavailable(f"PyTriton at {package} has no tritonserver (a partial or "
                                 f"source install?): reinstall it, {INSTALL}")
    if not found.stub.is_file():
        there = sorted(p.parent.name for p in found.stub.parent.parent.glob("*/" + STUB))
        raise BackendUnavailable(
            f"PyTriton's Python backend has no stub for Python {version} (it has "
            f"{', '.join(there) or 'none'}): run fcn-edge with one of those Pythons, or "
            f"upgrade it: pip install -U nvidia-pytriton")
    return found


def prepare_backends(dist: TritonDist, folder: Path) -> Path:
    """A backend folder for ``--backend-directory`` under ``folder``: ``python/`` holding the
    Python backend and the stub for this interpreter. Links where the file system has them
    (the dist is 30 MB), copies where it does not."""
    python = folder / "backends" / "python"
    python.mkdir(parents=True)
    sources = [(dist.python_backend / name, python / name) for name in _BACKEND_FILES]
    for source, target in [*sources, (dist.stub, python / STUB)]:
        try:
            target.symlink_to(source)
        except OSError:
            shutil.copy2(source, target)
    return folder / "backends"


def server_env(dist: TritonDist) -> dict[str, str]:
    """The server's environment: this interpreter's libpython first, then the bundled
    libraries, then the user's own ``LD_LIBRARY_PATH``; this interpreter's folder first on
    ``PATH``."""
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    soname = sysconfig.get_config_var("INSTSONAME") or ""
    libs = [libdir] if libdir and soname and (Path(libdir) / soname).is_file() else []
    libs += [str(dist.libs)] + [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
    env["LD_LIBRARY_PATH"] = ":".join(libs)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent),
                                   *filter(None, env.get("PATH", "").split(os.pathsep))])
    return env


# --- reading the server's log ----------------------------------------------------------------

#: A Triton error line: ``E1205 14:17:17.334422 671 model_lifecycle.cc:642] "message"``.
_ERROR_LINE = re.compile(r'^E\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "(.*)"\s*$')
#: Errors every start on a machine without a GPU logs, none of them why a start failed.
_NOISE = ("CudaDriverHelper has not been initialized",)


def last_error(log: str) -> str:
    """The line of a tritonserver log that says why it stopped: its last error (the message
    only, first line of a Python traceback's text), else its closing ``error: ...`` line,
    else its last line."""
    lines = log.splitlines()
    for line in reversed(lines):
        match = _ERROR_LINE.match(line)
        if match and not any(noise in match.group(1) for noise in _NOISE):
            return _first_line(match.group(1))
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: "):].strip()
    return next((line.strip() for line in reversed(lines) if line.strip()), "no output")


def _first_line(message: str) -> str:
    """Triton escapes a traceback's newlines (``\\n``) inside the quotes: the first line is
    the exception; ``Internal: `` is Triton's status code, not the reason."""
    text = message.split("\\n")[0].strip().replace("Internal: ", "")
    return text.replace('\\"', '"').rstrip(".") or message
