"""``fcn-edge serve``: an artifact (or a Triton model repository) served to many clients over
HTTP and gRPC by a real Triton Inference Server, until Ctrl-C or SIGTERM."""
from __future__ import annotations

import argparse

from ..errors import InputError
from ..io import check_writable
from .args import add_bounded, config_from_args
from .model_arg import ANY, add_model_argument, resolve_model

# The ranges the flags read, imported only when a flag is given (the serve layer imports the
# runtime; PyTriton and tritonclient are never imported here).
_SERVER = "fcn_edge.serve.server:ServerConfig"
_MODEL = "fcn_edge.serve.server:ServeFlags"
#: The flags that say how MODEL is served; a repository's config.pbtxt says it for its own.
MODEL_FLAGS = (("--name", "name"), ("--max-batch", "max_batch_size"),
               ("--max-delay-ms", "max_delay_ms"), ("--instances", "instances"),
               ("--backend", "backend"), ("--threads", "threads"))


def cmd_serve(args: argparse.Namespace) -> int:
    from ..serve.repository import ServeModel
    from ..serve.server import ServerConfig, serve_model, serve_repository

    config = config_from_args(ServerConfig, args)
    if config.log_file is not None:
        check_writable(config.log_file, "--log-file")
    if args.repository is not None:
        _check_repository_flags(args)
        serve_repository(args.repository, config)  # returns only by an exception: a stop
        return 0
    if args.model is None:
        raise InputError("give MODEL (an .onnx, an fcn-edge .engine, a checkpoint or a zoo "
                         "name) or --repository DIR (a Triton model repository)")
    resolve_model(args)
    delay = {} if args.max_delay_ms is None else {"max_delay_us": round(args.max_delay_ms * 1e3)}
    serve_model(args.model, config_from_args(ServeModel, args, **delay), config)
    return 0


def _check_repository_flags(args: argparse.Namespace) -> None:
    """--repository serves models as their config.pbtxt says: MODEL and the flags that would
    say it otherwise are refused rather than ignored."""
    if args.model is not None:
        raise InputError(f"give MODEL or --repository DIR, not both (got {args.model} and "
                         f"--repository {args.repository})")
    given = [flag for flag, dest in MODEL_FLAGS if getattr(args, dest) is not None]
    if given:
        raise InputError(f"{given[0]} says how MODEL is served; with --repository, each "
                         f"model's config.pbtxt says it (edit it there)")


def add_parsers(sub) -> None:
    p = sub.add_parser("serve", help="serve a model to many clients through Triton "
                                     "(HTTP, gRPC, metrics)",
                       description="Serve an artifact with NVIDIA Triton Inference Server (the "
                                   "tritonserver of pip install \"fcn-edge[serve]\"): uint8 "
                                   "frames or JPEG/PNG bytes in, labels out, dynamic batching "
                                   "across clients. Ctrl-C or SIGTERM finishes the requests in "
                                   "flight, then stops.")
    add_model_argument(p, "model", needs=ANY, nargs="?", metavar="MODEL",
                       help="an .onnx, an fcn-edge .engine, a checkpoint, or a zoo name")
    p.add_argument("--repository", metavar="DIR",
                   help="serve this Triton model repository instead of MODEL (e.g. from "
                        "fcn-edge export --triton-repo DIR --triton-platform python)")
    p.add_argument("--name", help="the model's name on the server (default fcn)")
    p.add_argument("--host", help="the address to listen on (default 127.0.0.1, this machine "
                                  "only; 0.0.0.0 for every interface)")
    add_bounded(p, "--http-port", _SERVER, help="HTTP/REST port (default 8000; 0: any free)")
    add_bounded(p, "--grpc-port", _SERVER, help="gRPC port (default 8001; 0: any free)")
    add_bounded(p, "--metrics-port", _SERVER,
                help="Prometheus metrics port (default 8002; 0: any free)")
    add_bounded(p, "--max-batch", _MODEL, dest="max_batch_size", metavar="N",
                help="dynamic batching: at most N frames per model call (default 8; 1: each "
                     "request alone)")
    add_bounded(p, "--max-delay-ms", _MODEL, metavar="MS",
                help="dynamic batching: ms a request may wait for others (default 1)")
    add_bounded(p, "--instances", _MODEL,
                help="copies of the model run in parallel, each its own process (default 1)")
    p.add_argument("--backend", help="the runtime's backend: auto (default), onnxruntime, "
                                     "tensorrt, torch, or an exact name such as onnxruntime:cpu")
    add_bounded(p, "--threads", _MODEL, help="CPU inference threads per instance (0: the "
                                             "engine's default)")
    add_bounded(p, "--drain-timeout", _SERVER, metavar="S",
                help="on Ctrl-C/SIGTERM, seconds to finish the requests in flight (default 30)")
    add_bounded(p, "--start-timeout", _SERVER, metavar="S",
                help="seconds allowed to load the models (default 120)")
    p.add_argument("--log-file", metavar="FILE",
                   help="keep the server's log in FILE (appended; default: a temporary file "
                        "removed at the end)")
    p.set_defaults(func=cmd_serve)
