"""``fcn-edge zoo`` and ``fcn-edge fetch``: the published weights fcn-edge knows, and
downloading one of them on purpose (``fcn_edge.models.zoo``)."""
from __future__ import annotations

import argparse
import json
import sys


def cmd_zoo(args: argparse.Namespace) -> int:
    from ..models import zoo

    rows = [_row(entry, args.cache) for entry in zoo.entries()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<27} {'classes':>7} {'input':<14} {'params':>11} {'published':>11} "
          f"{'cached':<7} licence")
    for r in rows:
        computed = "needs torch" if r["params"] is None else f"{r['params']:,}"
        print(f"{r['name']:<27} {len(r['classes']):>7} {r['input_size']:<14} {computed:>11} "
              f"{r['published_params']:>11,} {r['cached']:<7} {r['licence']}")
        print(f"    {r['architecture']}; {r['url']}"
              + ("" if r["loadable"] else "  (not loadable yet)"))
    return 0


def _row(entry, cache: str | None) -> dict:
    """One entry's facts for the listing, its parameter count computed (None without torch)."""
    try:
        params = entry.count_params()
    except ImportError:  # listing works on a runtime-only box; counting needs torch
        params = None
    return {"name": entry.name, "architecture": entry.architecture,
            "classes": list(entry.classes), "input_size": entry.input_size_text,
            "mean": list(entry.mean), "std": list(entry.std), "color_order": entry.color_order,
            "params": params, "published_params": entry.num_params,
            "cached": entry.cache_state(cache), "path": str(entry.cached_path(cache)),
            "url": entry.url, "sha256": entry.sha256, "licence": entry.licence,
            "loadable": entry.loadable, "source": entry.source, "notes": entry.notes}


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..io import check_writable
    from ..models import zoo

    entry = zoo.get(args.name)  # an unknown name: one line listing the names, before any I/O
    if args.cache is not None:
        check_writable(args.cache, "--cache", folder=True)
    path = zoo.fetch(entry.name, args.cache, log=lambda line: print(line, file=sys.stderr))
    print(path)
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("zoo", help="list the published weights fcn-edge knows (fcn-edge fetch "
                                   "downloads one)")
    p.add_argument("--cache", metavar="DIR",
                   help="cache folder to look in (default $FCN_EDGE_CACHE, else "
                        "~/.cache/fcn-edge)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("fetch", help="download a zoo entry's weights into the cache, verified "
                                     "against the published hash",
                       description="Download NAME's weights (fcn-edge zoo lists the names) with "
                                   "a progress bar, check the published SHA-256, and print the "
                                   "file's path. An interrupted download resumes.")
    p.add_argument("name", metavar="NAME", help="a zoo name, e.g. torchvision/fcn_resnet50")
    p.add_argument("--cache", metavar="DIR",
                   help="folder to download into (default $FCN_EDGE_CACHE, else "
                        "~/.cache/fcn-edge)")
    p.set_defaults(func=cmd_fetch)
