"""``fcn-edge checks``, ``fcn-edge models`` and ``fcn-edge demo``: what this machine and
fcn-edge have, and the whole pipeline in one command."""
from __future__ import annotations

import argparse
import json

from ..errors import BackendUnavailable
from ..io import check_writable
from ..config import IMAGE_SIZE, ModelConfig
from ..models.registry import backbone_names
from .args import add_bounded, config_from_args


def cmd_checks(args: argparse.Namespace) -> int:
    from ..checks import run_checks

    return 0 if run_checks(with_smoke=not args.no_smoke) else 1


def cmd_models(args: argparse.Namespace) -> int:
    height, width = args.size
    try:
        from ..models.summary import describe_all
    except ImportError as exc:
        raise BackendUnavailable(f"listing models needs torch ({exc.name} is missing): "
                                 f"pip install 'fcn-edge[train]'") from None
    rows = describe_all(num_classes=args.num_classes, size=(height, width))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    wide = max([9] + [len(r["backbone"]) for r in rows])  # mobilenet_v3_large is 18
    print(f"{'model':<13} {'backbone':<{wide}} {'layout':<10} {'stride':>6} {'params':>9} "
          f"{'GFLOPs':>8}   (at {height}×{width}, {args.num_classes} classes)")
    for r in rows:
        print(f"{r['name']:<13} {r['backbone']:<{wide}} {r['layout']:<10} {r['output_stride']:>6} "
              f"{r['params'] / 1e6:>8.1f}M {r['gflops']:>8.1f}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import DemoConfig, run_demo

    config = config_from_args(DemoConfig, args)
    config.check()  # a bad setting first, then an unwritable --out, then minutes of work
    check_writable(config.out_dir, "--out", folder=True)
    result = run_demo(config)
    print(f"report: {result.report}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("checks", help="report installed engines and smoke-test every backbone")
    p.add_argument("--no-smoke", action="store_true", help="only report the environment")
    p.set_defaults(func=cmd_checks)

    p = sub.add_parser("models", help="list the FCN models (ours and the published "
                       "architectures) with parameters and GFLOPs")
    add_bounded(p, "--size", IMAGE_SIZE, default="512x512", help="input HEIGHTxWIDTH for GFLOPs")
    add_bounded(p, "--num-classes", ModelConfig, default=21)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)


def add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="the whole pipeline in one command: procedural data → "
                                    "train → evaluate → export → bench → run → report",
                       description="Train FCN-8s ResNet18 on procedural scenes (a fixed "
                                   "2400 scenes x 4 epochs: the same model on any machine, "
                                   "about 4-5 minutes on an idle 2-core CPU; the time is "
                                   "estimated and shown before training starts), then "
                                   "evaluate, export (fp32/fp16/int8), benchmark, segment a "
                                   "rendered video and write report.md.")
    p.add_argument("--out", dest="out_dir", metavar="OUT",
                   help="output folder (default runs/demo)")
    add_bounded(p, "--minutes", "fcn_edge.demo.state:DemoConfig",
                help="train for this many minutes instead of the fixed work: the scenes "
                     "are sized to the speed measured at the start, so a slow or busy "
                     "machine trains a weaker model (default: fixed work)")
    p.add_argument("--backbone", choices=backbone_names(),
                   help="the FCN-8s trunk (default resnet18)")
    p.set_defaults(func=cmd_demo)
