"""The ``fcn-edge`` command line: parses arguments into configs, calls library functions,
nothing else.

Each command group has its module — ``info`` (checks, models, demo), ``train`` (train, eval),
``export`` (export, build), ``run`` (run, bench) — with ``add_parsers(sub)`` and one function
``cmd_<name>(args) -> int`` per command; ``args`` holds what every command shares. A flag's
choices come from the config and registry constants, its ``dest`` is the config field it sets.
An :class:`FcnEdgeError` becomes one line on stderr and exit code 1 (2 when an optional engine
is missing), never a traceback. Building the parser imports neither torch nor the data package.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from .. import __version__
from ..errors import BackendUnavailable, FcnEdgeError
from . import export, info, run, train
from .args import convert

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcn-edge",
        description="Fully Convolutional Networks for semantic segmentation, "
                    "from training to the edge.")
    parser.add_argument("--version", action="version", version=f"fcn-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info.add_parsers(sub)
    train.add_parsers(sub)
    export.add_parsers(sub)
    run.add_parsers(sub)
    info.add_demo_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(convert(args))
    except BackendUnavailable as exc:
        print(f"fcn-edge {args.command}: {exc}", file=sys.stderr)
        return 2
    except FcnEdgeError as exc:
        print(f"fcn-edge {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fcn-edge {args.command}: interrupted", file=sys.stderr)
        return 130
