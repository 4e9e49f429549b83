"""Helpers of the tests that start the real tritonserver (tests/serve): frames to send, and
the machine's processes read from /proc, to prove that nothing outlives a server."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The frame size the serve tests send: small, so that a request takes milliseconds.
HEIGHT, WIDTH = 48, 64


def frames(count: int, seed: int = 0, h: int = HEIGHT, w: int = WIDTH) -> np.ndarray:
    """``count`` random BGR frames, N×H×W×3 uint8."""
    return np.random.default_rng(seed).integers(0, 256, (count, h, w, 3), dtype=np.uint8)


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    name: str


def processes() -> list[Proc]:
    """Every live process (zombies, already dead, are left out), read from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone while we looked
        name = text[text.index("(") + 1:text.rindex(")")]
        state, ppid, pgid = text[text.rindex(")") + 2:].split()[:3]
        if state != "Z":
            found.append(Proc(int(stat.parent.name), int(ppid), int(pgid), name))
    return found


def server_processes(server_pid: int) -> list[Proc]:
    """The server and what it started: its process group (tritonserver leads it) and any
    Python backend stub, wherever it was re-parented."""
    return [p for p in processes()
            if p.pid == server_pid or p.pgid == server_pid or p.ppid == server_pid]


def tritonserver_child(pid: int) -> Proc:
    """The tritonserver process that process ``pid`` (an ``fcn-edge serve``) started."""
    found = [p for p in processes() if p.ppid == pid and p.name == "tritonserver"]
    assert len(found) == 1, f"{pid} runs {len(found)} tritonservers"
    return found[0]
