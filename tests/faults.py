"""Faults that real deployments send, made real for tests: ``from faults import ...``.

- ``read_only_folder``: a folder this process truly cannot write (a read-only tmpfs when we are
  root, since root ignores permission bits; ``chmod 555`` otherwise).
- ``small_filesystem``: a size-limited tmpfs, for "disk full" (ENOSPC) on every write.
- ``limit_file_size``: a ``preexec_fn`` giving a child process ``RLIMIT_FSIZE`` (writes past the
  limit fail with EFBIG), for where no file system can be mounted.
- ``run_cli`` / ``start_cli``: ``fcn-edge`` as a real child process (``python -m fcn_edge``).

Each skips the test (naming why) where the machine cannot give the fault, never fakes it.
"""
from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest


def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True)
    return done.returncode == 0


def _unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@contextlib.contextmanager
def read_only_folder(where: Path) -> Iterator[Path]:
    """``where`` made a folder that cannot be written (created if missing)."""
    if os.geteuid() == 0:
        if not _mount_tmpfs(where, "ro,size=64k"):
            pytest.skip("running as root and cannot mount a read-only tmpfs here")
        try:
            yield where
        finally:
            _unmount(where)
        return
    where.mkdir(parents=True, exist_ok=True)
    where.chmod(0o555)
    try:
        yield where
    finally:
        where.chmod(0o755)


@contextlib.contextmanager
def small_filesystem(where: Path, size: str = "256k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where``: writing more fails with ENOSPC."""
    if not _mount_tmpfs(where, f"size={size}"):
        pytest.skip("cannot mount a size-limited tmpfs here (needs root and mount rights); "
                    "the RLIMIT_FSIZE tests cover the same code")
    try:
        yield where
    finally:
        _unmount(where)


def limit_file_size(limit_bytes: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child may not write any file past ``limit_bytes`` (EFBIG, the
    signal SIGXFSZ ignored so the write fails instead of killing the process)."""
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return preexec


def cli_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "fcn_edge", *map(str, args)]


def run_cli(args: Sequence[str], *, cwd: Path | None = None, timeout: float = 300,
            preexec_fn: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
    """``fcn-edge ARGS`` to the end, in a real child process; output captured as text."""
    return subprocess.run(cli_command(args), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=preexec_fn)


def start_cli(args: Sequence[str], *, cwd: Path | None = None,
              preexec_fn: Callable[[], None] | None = None,
              new_group: bool = False) -> subprocess.Popen:
    """``fcn-edge ARGS`` started in a real child process (send it signals, then ``communicate``,
    or watch its output with ``ChildOutput``). Its output is unbuffered, as on a terminal, so a
    progress line is there to see when it is printed. ``new_group``: the child leads its own
    process group, for signals sent to the whole group (``os.killpg``) as systemd does.

    SIGINT starts at its default in the child, as in a terminal's foreground job: a test run
    launched in the background (``cmd &`` in a script, as CI jobs often are) inherits SIGINT
    ignored, and Python then keeps it ignored, so a Ctrl-C test saw the run finish (exit 0)."""
    def start() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if preexec_fn is not None:
            preexec_fn()

    return subprocess.Popen(cli_command(args), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=start,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            start_new_session=new_group)


def assert_stopped_by(signum: int, command: str, code: int, err: str) -> None:
    """A child ``fcn-edge COMMAND`` ended as a signal must end it: exit 128 + ``signum`` and,
    last on stderr, one line ``fcn-edge COMMAND: stopped by SIGTERM``; no traceback."""
    assert code == 128 + signum, err
    assert err.strip().splitlines()[-1] == \
        f"fcn-edge {command}: stopped by {signal.Signals(signum).name}", err
    assert "Traceback" not in err, err


class ChildOutput:
    """A started child's stdout and stderr, read line by line as they come (one thread each),
    so that a test can wait for a known progress line before it sends a signal."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.out, self.err = proc, [], []
        self._threads = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                         for stream, lines in ((proc.stdout, self.out), (proc.stderr, self.err))]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def wait_for(self, pattern: str, timeout: float = 120) -> str:
        """The first line (stdout or stderr) matching the regex ``pattern``; fails the test if
        the child ends or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in (*self.out, *self.err):
                if re.search(pattern, line):
                    return line
            if self.proc.poll() is not None and not any(t.is_alive() for t in self._threads):
                break
            time.sleep(0.01)
        self.proc.kill()
        pytest.fail(f"no line matching {pattern!r} (exit {self.proc.poll()}):\n"
                    f"{''.join(self.out)}{''.join(self.err)[-3000:]}")

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        """Wait for the end: (exit code, stdout, stderr)."""
        code = self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(timeout)
        return code, "".join(self.out), "".join(self.err)
