"""The model a command takes: a local file, or a zoo name resolved to the file it deploys.

Every command that takes a model — ``export``, ``eval``, ``train --init-from``, ``run``,
``bench``, ``build`` — adds it with :func:`add_model_argument` and calls :func:`resolve_model`
before its work, so the rule is written once:

- a path that exists is that file, even when it is spelled like a zoo name;
- a zoo name (``torchvision/fcn_resnet50``; ``fcn-edge zoo`` lists them) becomes the file
  ``fcn_edge.export.zoo_prepare.prepare`` gives: from the cache, downloaded (announced, with a
  progress bar) when it is not there, or ``--weights FILE`` — the published file, given locally on an
  offline box, checked against the zoo's hash and never downloaded;
- ``--weights`` without a zoo name, or a name (no suffix) that is neither a file nor a zoo
  name, is one line saying what to give; a missing ``x.pt`` is left to the command's own
  "no such file" line;
- a command that needs a PyTorch checkpoint (export, eval, train) given an entry whose file is
  already an exported ONNX (jetson-inference's) says that run, bench and build take it, and a
  command that needs an ONNX (build) given a checkpoint says to export it first.

``fcn_edge.models.zoo`` imports no torch, so ``run`` and ``build`` stay torch-free until the
file they are given needs it.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import Log

#: What a command needs the model to be.
CHECKPOINT, ONNX, ANY = "checkpoint", "onnx", "any"
#: The namespace attribute of the offline file flag, ``--weights FILE``.
WEIGHTS_DEST = "zoo_weights"
_WEIGHTS_HELP = ("with a zoo name: its published weights file, given locally (offline boxes); "
                 "checked against the zoo's hash, never downloaded")


@dataclass(frozen=True)
class ModelArgument:
    """Where a command's parser put its model, for :func:`resolve_model`.

    Attributes:
        dest: the namespace attribute holding the model text.
        label: how messages name it (``the checkpoint``, ``--model``, ``--init-from``).
        needs: ``checkpoint`` (a PyTorch checkpoint), ``onnx``, or ``any`` model file.
        command: the command, for the advice in messages (``fcn-edge export``).
        weights_dest: the attribute of the flag giving a zoo name's file locally.
        weights_alone: whether that flag also means something without a zoo name (train's
            ``--weights``, the ImageNet classifier), so it is not refused there.
    """

    dest: str
    label: str
    needs: str
    command: str
    weights_dest: str = WEIGHTS_DEST
    weights_alone: bool = False


def add_model_argument(p: argparse.ArgumentParser, name: str, *, needs: str,
                       weights_dest: str | None = None, **kwargs: Any) -> None:
    """Add the model argument ``name`` (a positional or a flag such as ``--model``) and, unless
    the command has its own (``weights_dest``), ``--weights FILE``. ``kwargs`` go to
    ``add_argument``; ``dest`` defaults as argparse's."""
    p.add_argument(name, **kwargs)
    dest = kwargs.get("dest") or name.lstrip("-").replace("-", "_")
    label = name if name.startswith("-") else f"the {name}"
    if weights_dest is None:
        p.add_argument("--weights", dest=WEIGHTS_DEST, metavar="FILE", help=_WEIGHTS_HELP)
    p.set_defaults(model_argument=ModelArgument(
        dest, label, needs, p.prog, weights_dest or WEIGHTS_DEST, weights_dest is not None))


def zoo_name(args: argparse.Namespace) -> str | None:
    """The zoo name the command's model argument gives, or None (a path, or no model): a
    path that exists wins over a zoo name spelled the same."""
    from ..models import zoo

    text = getattr(args, args.model_argument.dest)
    if text is None or not zoo.is_zoo_name(text):  # is_zoo_name: an existing path never is
        return None
    return text


def resolve_model(args: argparse.Namespace, log: Log = print) -> str | None:
    """Replace the model text in ``args`` with the file to use (see the module docstring);
    return the zoo name it came from, or None for a local file (or no model given)."""
    from ..models import zoo

    spec: ModelArgument = args.model_argument
    text = getattr(args, spec.dest)
    weights = getattr(args, spec.weights_dest, None)
    if zoo_name(args) is None:
        if weights is not None and not spec.weights_alone:
            raise InputError(f"--weights {weights}: give the zoo name this file belongs to as "
                             f"{spec.label} (fcn-edge zoo lists them); a file of your own is "
                             f"given as {spec.label} itself, without --weights")
        if text is not None and not Path(text).exists() and not Path(text).suffix:
            # Spelled like a name (a file would have a suffix: the command says it is missing).
            flag = f"{spec.label} " if spec.label.startswith("-") else ""
            raise InputError(f"{flag}{text}: no such file, and not a zoo name (one of "
                             f"{', '.join(zoo.names())}); a local model path must exist")
        return None
    if weights is not None and not Path(weights).exists():
        raise InputError(f"--weights {weights}: no such file (give {text}'s published weights "
                         f"file, or leave --weights out to use the cache)")
    _check_kind(spec, text, zoo.get(text).prepared_path())  # before any download
    from ..export.zoo_prepare import prepare

    path = Path(prepare(text, weights=weights, log=log))
    setattr(args, spec.dest, str(path))
    if spec.weights_alone:  # used up as the zoo file: not also an ImageNet initialisation
        setattr(args, spec.weights_dest, None)
    return text


def _check_kind(spec: ModelArgument, name: str, path: Path) -> None:
    """Refuse, in one line, a zoo entry whose prepared file (``path``, a ``.pt`` checkpoint or
    an ``.onnx``) is of a kind this command cannot take."""
    onnx = path.suffix.lower() == ".onnx"
    if spec.needs == CHECKPOINT and onnx:
        raise InputError(f"{name} is already an exported model ({path.name}), not a PyTorch "
                         f"checkpoint for {spec.command}: fcn-edge run, bench and build take it "
                         f"(fcn-edge run {name} --camera 0)")
    if spec.needs == ONNX and not onnx:
        raise InputError(f"{name} is a PyTorch checkpoint ({path.name}); {spec.command} takes "
                         f"an ONNX: export it first (fcn-edge export {name})")


def export_folder(name: str) -> Path:
    """Where ``fcn-edge export NAME`` writes a zoo model's artifacts without ``-o``:
    ``runs/export/<name>``, under the current folder (as ultralytics writes ``runs/``), where
    ``fcn-edge run`` finds the newest export — never the download cache."""
    return Path("runs", "export", *name.split("/"))
