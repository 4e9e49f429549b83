"""``fcn-edge zoo`` and ``fcn-edge fetch``: the published weights fcn-edge knows, and
downloading and preparing one of them on purpose (``fcn_edge.models.zoo``)."""
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
    width = max(len(r["name"]) for r in rows)
    print(f"{'name':<{width}} {'classes':>7} {'input (HxW)':<14} {'params':>11} "
          f"{'published':>14} {'cached':<8} licence")
    for r in rows:
        computed = "needs torch" if r["params"] is None else f"{r['params']:,}"
        published = ("not published" if r["published_params"] is None
                     else f"{r['published_params']:,}")
        print(f"{r['name']:<{width}} {len(r['classes']):>7} {r['input_size']:<14} "
              f"{computed:>11} {published:>14} {r['cached']:<8} {r['licence']}")
        print(f"    {r['architecture']}; {r['hash']}; {r['url']}"
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
            "prepared": str(entry.prepared_path(cache)), "url": entry.url,
            "sha256": entry.sha256, "md5": entry.md5, "hash": entry.hash_text,
            "licence": entry.licence, "loadable": entry.loadable,
            "source": entry.source, "notes": entry.notes}


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..export.zoo_prepare import prepare
    from ..io import check_writable
    from ..models import zoo

    entry = zoo.get(args.name)  # an unknown name: one line listing the names, before any I/O
    if args.cache is not None:
        check_writable(args.cache, "--cache", folder=True)
    get = prepare if entry.loadable else zoo.fetch  # no model yet: the file as published
    path = get(entry.name, weights=args.weights, cache=args.cache, sha256=args.sha256,
               log=lambda line: print(line, file=sys.stderr))
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

    p = sub.add_parser("fetch", help="download a zoo entry, verify its hash and prepare the "
                                     "file fcn-edge deploys",
                       description="Download NAME's file (fcn-edge zoo lists the names) with a "
                                   "progress bar, or take --weights FILE, check its hash (the "
                                   "published SHA-256 or MD5; where none is published, the "
                                   "one recorded at the first download), prepare it once in "
                                   "the cache (an fcn-edge checkpoint, or the archive's "
                                   "ONNX made self-describing) and print that file's path. "
                                   "An interrupted download resumes.")
    p.add_argument("name", metavar="NAME", help="a zoo name, e.g. torchvision/fcn_resnet50")
    p.add_argument("--weights", metavar="FILE",
                   help="the file you downloaded yourself (offline boxes): checked and "
                        "prepared instead of downloading")
    p.add_argument("--sha256", metavar="HEX",
                   help="the SHA-256 the file must have, for a source that publishes none "
                        "(recorded for later fetches)")
    p.add_argument("--cache", metavar="DIR",
                   help="folder to download into (default $FCN_EDGE_CACHE, else "
                        "~/.cache/fcn-edge)")
    p.set_defaults(func=cmd_fetch)
