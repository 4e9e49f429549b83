"""What every command's parser shares: configs filled from parsed flags, numbers read within
their ranges, and the other flag values converted after parsing.

A flag's ``dest`` is the name of the config field it sets, so :func:`config_from_args` fills
any frozen config dataclass from argparse's namespace by field name; a flag left out (None)
keeps the field's default. A numeric flag (counts, sizes, rates, seconds, number lists) is added
with :func:`add_bounded`: argparse reads it with its config field's rule (the config's
``BOUNDS``, ``runtime/bounds.py``), so the range is written once and a value outside it stops
the command while parsing. Names and modality lists are converted by :func:`convert` after
argparse has run. Either way a bad value is one ``fcn-edge CMD:`` line naming the flag (and
its range) and exit code 1, like every other input error, not argparse's usage and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Iterator

from ..errors import FcnEdgeError, InputError
from ..models.registry import resolve


def config_from_args(config: Any, args: argparse.Namespace, **given: Any) -> Any:
    """``config`` (a frozen dataclass, or an instance whose values are the defaults) with each
    field set from the flag of the same ``dest`` when it was given; ``given`` wins over both."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config)
              if getattr(args, f.name, None) is not None}
    values.update(given)
    if isinstance(config, type):
        return config(**values)
    return dataclasses.replace(config, **values)


class LazyChoices:
    """argparse ``choices`` read from ``"module:attribute"`` only when argparse needs them (a
    flag given, ``--help``), so that building the parser imports nothing heavy — ``fcn-edge
    run`` does not load the data package to list ``--data-layout``'s choices. Give the
    argument a ``metavar``: argparse formats it as soon as the argument is added."""

    def __init__(self, ref: str) -> None:
        self.ref = ref

    def __contains__(self, value: object) -> bool:
        return value in tuple(resolve(self.ref))

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(resolve(self.ref)))


#: The data set layouts ``open_dataset`` reads (``--data-layout``), listed only when needed.
DATA_LAYOUTS = LazyChoices("fcn_edge.data.layouts:LAYOUTS")
#: The exporter's choices, defined beside the code that reads them (which imports torch).
EXPORT_TARGETS = LazyChoices("fcn_edge.export.exporter:EXPORT_TARGETS")
INT8_TARGETS = LazyChoices("fcn_edge.export.int8:INT8_TARGETS")
LABELS_DTYPES = LazyChoices("fcn_edge.export.graph:LABELS_DTYPES")


class FlagError(FcnEdgeError):
    """A flag's value is malformed or out of its range, found while argparse parses it.

    Not a ValueError, so argparse lets it through instead of replacing its message with
    "invalid value"; ``main`` prints it as one ``fcn-edge CMD:`` line with exit code 1, as
    every other input error, before any work."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class FlagValue:
    """An argparse ``type``: reads a flag's text with the rule of the config field it sets —
    ``BOUNDS[field]`` of ``rules``, a config class, or ``rules`` itself when it is a rule.
    ``rules`` may be a ``"module:name"`` imported only when the flag is given, so that building
    the parser imports nothing heavy."""

    def __init__(self, prog: str, flag: str, rules: Any, field: str) -> None:
        self.prog, self.flag, self.rules, self.field = prog, flag, rules, field

    def __call__(self, text: str) -> Any:
        rules = resolve(self.rules)
        rule = rules.BOUNDS[self.field] if hasattr(rules, "BOUNDS") else rules
        try:
            return rule.parse(text, self.flag)
        except InputError as exc:
            raise FlagError(self.prog, str(exc)) from None


def add_bounded(p: argparse.ArgumentParser, flag: str, rules: Any, **kwargs: Any) -> None:
    """Add ``flag``, whose value is read and range-checked at parse time by the rule of the
    config field its ``dest`` names (``--max-steps`` → ``max_steps``; ``rules`` is the config
    class or its ``"module:Class"``), or by ``rules`` itself when it is a rule: the range is
    stated once, beside the field, and a bad value never reaches the work."""
    dest = kwargs.get("dest") or flag.lstrip("-").replace("-", "_")
    p.add_argument(flag, type=FlagValue(p.prog, flag, rules, dest), **kwargs)


def parse_inputs(text: str, flag: str = "--inputs") -> tuple[tuple[str, int], ...]:
    """``rgb,depth`` → ModelConfig.inputs pairs (modality, channels)."""
    from ..config import MODALITY_CHANNELS

    names = [n.strip() for n in text.split(",")]
    if any(n not in MODALITY_CHANNELS for n in names):
        raise InputError(f"{flag} takes modalities from {', '.join(MODALITY_CHANNELS)} "
                         f"(e.g. rgb,depth), got {text!r}")
    return tuple((n, MODALITY_CHANNELS[n]) for n in names)


def _names(text: str, flag: str) -> tuple[str, ...]:
    return tuple(text.split(","))


#: dest → how its text becomes the config value, for the flags that are not numbers (those
#: are read by their range's rule while parsing: :func:`add_bounded`). A dest means one thing
#: in every command.
CONVERTERS: dict[str, Callable[[str, str], Any]] = {
    "tasks": _names, "trt_versions": _names, "inputs": parse_inputs,
}


def convert(args: argparse.Namespace) -> argparse.Namespace:
    """Convert, in place, each flag of ``CONVERTERS`` that was given as text."""
    for dest, parse in CONVERTERS.items():
        text = getattr(args, dest, None)
        if isinstance(text, str):
            setattr(args, dest, parse(text, "--" + dest.replace("_", "-")))
    return args
