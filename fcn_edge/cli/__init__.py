"""The ``fcn-edge`` command line: parses arguments into configs, calls library functions,
nothing else.

Each command group has its module — ``info`` (checks, models, demo), ``zoo`` (zoo, fetch),
``train`` (train, eval), ``export`` (export, build), ``run`` (run, bench), ``serve`` — with
``add_parsers(sub)`` and one function ``cmd_<name>(args) -> int`` per command; ``args`` holds
what every command shares. A flag's choices come from the config and registry constants, its
``dest`` is the config field it sets.
An :class:`FcnEdgeError` becomes one line on stderr and exit code 1 (2 when an optional engine
is missing), never a traceback; so does a write that found no room (a full disk, a file size
limit). Ctrl-C exits 130; SIGTERM and SIGHUP stop a command as Ctrl-C does and exit 128 + the
signal (143, 129), as a shell reports them. Building the parser imports neither torch nor the
data package.
"""
from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
from types import FrameType
from typing import Callable, Sequence

from .. import __version__
from ..errors import BackendUnavailable, FcnEdgeError, Terminated
from ..io import NO_ROOM
from . import export, info, run, serve, train, zoo
from .args import FlagError, convert

__all__ = ["StopSignals", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcn-edge",
        description="Fully Convolutional Networks for semantic segmentation, "
                    "from training to the edge.")
    parser.add_argument("--version", action="version", version=f"fcn-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info.add_parsers(sub)
    zoo.add_parsers(sub)
    train.add_parsers(sub)
    export.add_parsers(sub)
    run.add_parsers(sub)
    serve.add_parsers(sub)
    info.add_demo_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except FlagError as exc:  # a flag's value out of its range: one line, like any input error
        print(f"{exc.prog}: {exc}", file=sys.stderr)
        return 1
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    name = f"fcn-edge {args.command}"
    with StopSignals() as stop:
        try:
            code = func(convert(args))
        except FcnEdgeError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            code = 2 if isinstance(exc, BackendUnavailable) else 1
        except OSError as exc:
            if exc.errno not in NO_ROOM:
                raise
            print(f"{name}: {_no_room(exc, _output_flag(parser, args.command))}",
                  file=sys.stderr)
            code = 1
        except KeyboardInterrupt:
            code = 130
            if stop.signum is None:
                print(f"{name}: interrupted", file=sys.stderr)
    if stop.signum is not None:  # the command may have finished cleanly (run): say why anyway
        print(f"{name}: stopped by {signal.Signals(stop.signum).name}", file=sys.stderr)
        return 128 + stop.signum
    return code


class StopSignals:
    """While a command runs, SIGTERM and SIGHUP raise :class:`Terminated` (a
    KeyboardInterrupt) in the main thread, as Ctrl-C raises KeyboardInterrupt: ``timeout``,
    systemd, Docker and Kubernetes stop with SIGTERM, and every command already finishes its
    outputs cleanly on Ctrl-C. Each signal raises again, as Ctrl-C pressed twice does; the
    code that finishes outputs bounds its wait. ``signum`` is the first signal that arrived.
    The previous handlers come back on exit; outside the main thread (an embedding app)
    nothing is installed, since Python allows handlers only there."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                    if hasattr(signal, name))

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._closing = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        if not self._closing:  # not while the handlers are being put back
            raise Terminated(signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, exc_type: type | None, *exc_info: object) -> bool:
        self._closing = True
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        # One that landed after the command's own handling (it had finished): ``signum`` says.
        return exc_type is not None and issubclass(exc_type, Terminated)


def _output_flag(parser: argparse.ArgumentParser, command: str) -> str:
    """The flag that chooses where ``command`` writes (--out or --output), for the advice."""
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = {flag for action in subparsers.choices[command]._actions
             for flag in action.option_strings}
    return next((flag for flag in ("--out", "--output") if flag in flags), "output")


def _no_room(exc: OSError, flag: str) -> str:
    """One line for a write that found no room: the disk, a quota or a file size limit."""
    where = f" {exc.filename}" if exc.filename else ""
    advice = (f"raise the file size limit (ulimit -f) or choose another {flag}"
              if exc.errno == errno.EFBIG else f"free space or choose another {flag}")
    return f"cannot write{where}: {exc.strerror} ({advice})"
