"""The ``fcn-edge`` command line: parses arguments, calls library functions, nothing else.

Every command is one function ``cmd_<name>(args) -> int``. An :class:`FcnEdgeError` becomes
one line on stderr and exit code 1 (2 when an optional engine is missing), never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from . import __version__
from .errors import BackendUnavailable, FcnEdgeError, InputError


def cmd_checks(args: argparse.Namespace) -> int:
    from .checks import run_checks

    return 0 if run_checks(with_smoke=not args.no_smoke) else 1


def cmd_models(args: argparse.Namespace) -> int:
    height, width = _parse_size(args.size)
    try:
        from .models.summary import describe_all
    except ImportError as exc:
        raise BackendUnavailable(f"listing models needs torch ({exc.name} is missing): "
                                 f"pip install 'fcn-edge[train]'") from None
    rows = describe_all(num_classes=args.num_classes, size=(height, width))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<8} {'backbone':<9} {'layout':<10} {'stride':>6} {'params':>9} "
          f"{'GFLOPs':>8}   (at {height}×{width}, {args.num_classes} classes)")
    for r in rows:
        print(f"{r['name']:<8} {r['backbone']:<9} {r['layout']:<10} {r['output_stride']:>6} "
              f"{r['params'] / 1e6:>8.1f}M {r['gflops']:>8.1f}")
    return 0


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size must look like HEIGHTxWIDTH (e.g. 512x1024), got {text!r}") from None
    if h < 1 or w < 1:
        raise InputError(f"--size must be positive, got {text!r}")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcn-edge",
        description="Fully Convolutional Networks for semantic segmentation, "
                    "from training to the edge.")
    parser.add_argument("--version", action="version", version=f"fcn-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("checks", help="report installed engines and smoke-test every backbone")
    p.add_argument("--no-smoke", action="store_true", help="only report the environment")
    p.set_defaults(func=cmd_checks)

    p = sub.add_parser("models", help="list the FCN models with parameters and GFLOPs")
    p.add_argument("--size", default="512x512", help="input HEIGHTxWIDTH for GFLOPs")
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except BackendUnavailable as exc:
        print(f"fcn-edge {args.command}: {exc}", file=sys.stderr)
        return 2
    except FcnEdgeError as exc:
        print(f"fcn-edge {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fcn-edge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
