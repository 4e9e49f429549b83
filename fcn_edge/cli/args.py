"""What every command's parser shares: configs filled from parsed flags, and flag values
converted after parsing.

A flag's ``dest`` is the name of the config field it sets, so :func:`config_from_args` fills
any frozen config dataclass from argparse's namespace by field name; a flag left out (None)
keeps the field's default. Values that need parsing (sizes, number lists, modality lists) are
converted by :func:`convert` after argparse has run, so a bad value is one ``fcn-edge CMD:``
line and exit code 1 like every other input error, not argparse's usage and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Iterator

from ..errors import InputError
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


def parse_size(text: str, flag: str = "--size") -> tuple[int, int]:
    """``"512x1024"`` → ``(512, 1024)``."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"{flag} must look like HEIGHTxWIDTH (e.g. 512x1024), "
                         f"got {text!r}") from None
    if h < 1 or w < 1:
        raise InputError(f"{flag} must be positive, got {text!r}")
    return h, w


def parse_floats(text: str, flag: str, count: int | None = None) -> tuple[float, ...]:
    """``"0.5,2"`` → ``(0.5, 2.0)``; ``count`` numbers exactly when given."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{flag} takes comma-separated numbers, got {text!r}") from None
    if count is not None and len(values) != count:
        raise InputError(f"{flag} takes {count} comma-separated numbers, got {text!r}")
    return values


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


#: dest → how its text becomes the config value. A dest means one thing in every command.
CONVERTERS: dict[str, Callable[[str, str], Any]] = {
    "size": parse_size, "image_size": parse_size, "crop": parse_size,
    "parity_sizes": lambda text, flag: tuple(parse_size(t, flag) for t in text.split(",")),
    "scale": lambda text, flag: parse_floats(text, flag, count=2),
    "class_weights": parse_floats, "task_weights": parse_floats,
    "tasks": _names, "trt_versions": _names, "inputs": parse_inputs,
}


def convert(args: argparse.Namespace) -> argparse.Namespace:
    """Convert, in place, each flag of ``CONVERTERS`` that was given as text."""
    for dest, parse in CONVERTERS.items():
        text = getattr(args, dest, None)
        if isinstance(text, str):
            setattr(args, dest, parse(text, "--" + dest.replace("_", "-")))
    return args
