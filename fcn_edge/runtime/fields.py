"""Reading the fields of a file's JSON metadata, each checked once as it is read.

Artifacts (``metadata.ArtifactMeta``) and checkpoints (``models.checkpoint.CheckpointMeta``)
describe themselves in plain JSON-like data. Their parsers read it through a ``FieldReader``,
so that a missing or malformed field is one ``ModelFormatError`` line naming the file, the
field (``heads[1].palette``) and what to do — never a ``KeyError`` three calls later.

Plain Python: the runtime imports it on boxes without torch.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Callable, Iterator, Mapping, TypeVar

from ..errors import ModelFormatError

T = TypeVar("T")
#: ``default`` of a field that must be there.
REQUIRED: Any = object()


class FieldReader:
    """The fields of one JSON object read from ``source``.

    Args:
        data: the object (a mapping; anything else is refused).
        source: the file, for messages (``model.onnx``).
        fix: what to do about a malformed file, ending each message.
        where: the object's place in the file (``heads[1]``), empty for the top level.
    """

    def __init__(self, data: Any, source: str, fix: str, where: str = "") -> None:
        self.source, self.fix, self.where = source, fix, where
        if not isinstance(data, Mapping):
            raise self.error(None, f"must be an object, got {_short(data)}")
        self.data = data

    def __call__(self, key: str, parse: Callable[[Any], T], default: Any = REQUIRED) -> T:
        """Field ``key`` through ``parse`` (which raises ValueError/TypeError saying what the
        field must be); ``default`` when it is missing or null, unless it is REQUIRED."""
        value = self.data.get(key)
        if value is None:
            if default is REQUIRED:
                raise self.error(key, "is missing")
            return default
        try:
            return parse(value)
        except (TypeError, ValueError) as exc:
            raise self.error(key, f"{exc}, got {_short(value)}") from None

    def each(self, key: str) -> Iterator["FieldReader"]:
        """A reader for every object of the list in field ``key`` (none when it is missing)."""
        for i, item in enumerate(self(key, _list, ())):
            yield FieldReader(item, self.source, self.fix, f"{self._name(key)}[{i}]")

    def nested(self, key: str) -> "FieldReader":
        """A reader for the object in field ``key`` (an empty one when it is missing)."""
        return FieldReader(self(key, _object, {}), self.source, self.fix, self._name(key))

    def error(self, key: str | None, reason: str) -> ModelFormatError:
        """``reason`` (what is wrong) about field ``key`` (None: this object) as one line."""
        field = self._name(key) if key else self.where
        what = f"metadata field {field!r}" if field else "the metadata"
        return ModelFormatError(f"{self.source}: {what} {reason}; {self.fix}")

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key


# --- parsers: value -> checked value, or ValueError/TypeError saying what it must be ---------

def text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("must be a string")
    return value


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError("must be an integer")
    return int(value)


def count(value: Any) -> int:
    """A positive integer."""
    value = integer(value)
    if value < 1:
        raise ValueError("must be a positive integer")
    return value


def bounded(low: int, high: int) -> Callable[[Any], int]:
    """An integer from ``low`` to ``high``: the bound that keeps a file's numbers sane."""
    def parse(value: Any) -> int:
        value = integer(value)
        if not low <= value <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return value
    return parse


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("must be true or false")
    return value


def obj(value: Any) -> dict:
    """A JSON object, copied."""
    return dict(_object(value))


def names(value: Any) -> tuple[str, ...]:
    """A list of strings (class names, modalities)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError("must be a list of strings")
    return tuple(value)


def name(value: Any) -> str:
    """A non-empty string of at most 256 characters (a tensor, task or model name)."""
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        raise TypeError("must be a non-empty string of at most 256 characters")
    return value


def name_list(most: int) -> Callable[[Any], tuple[str, ...]]:
    """A list of 1 to ``most`` strings (class names)."""
    def parse(value: Any) -> tuple[str, ...]:
        if not isinstance(value, (list, tuple)) or not 0 < len(value) <= most \
                or not all(isinstance(v, str) for v in value):
            raise TypeError(f"must be a list of 1 to {most} strings")
        return tuple(value)
    return parse


def palette(value: Any) -> tuple[tuple[int, int, int], ...]:
    """A list of [r, g, b] colours, each 0..255 (at most 65536: one per class)."""
    colours = []
    if len(_list(value)) > 1 << 16:
        raise ValueError("must have at most 65536 colours")
    for rgb in _list(value):
        try:
            colour = tuple(integer(c) for c in _list(rgb))
        except TypeError:
            colour = ()
        if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
            raise ValueError("must be a list of [r, g, b] colours of 0..255")
        colours.append(colour)
    return tuple(colours)


def three_floats(value: Any) -> tuple[float, float, float]:
    """Three finite numbers (a per-channel mean or std)."""
    if not isinstance(value, (list, tuple)) or len(value) != 3 or \
            not all(isinstance(v, Real) and not isinstance(v, bool) for v in value):
        raise TypeError("must be three numbers")
    floats = tuple(float(v) for v in value)
    if not all(math.isfinite(v) for v in floats):
        raise ValueError("must be three finite numbers")
    return floats


def three_in(low: float, high: float) -> Callable[[Any], tuple[float, float, float]]:
    """Three numbers from ``low`` to ``high``."""
    def parse(value: Any) -> tuple[float, float, float]:
        floats = three_floats(value)
        if not all(low <= v <= high for v in floats):
            raise ValueError(f"must be three numbers from {low:g} to {high:g}")
        return floats
    return parse


def height_width(value: Any) -> tuple[int, int]:
    """An image size, [height, width]."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise TypeError("must be [height, width]")
    return count(value[0]), count(value[1])


def check_values(record: Any, parsers: Mapping[str, Callable[[Any], Any]],
                 where: str = "") -> None:
    """Run each parser on ``record``'s attribute of that name (None is skipped): the same
    checks a parsed file gets, for a record built in code. A ModelFormatError names the field
    (``where``: the record's place, ``heads[1]``); whoever knows the file adds it."""
    for key, parse in parsers.items():
        value = getattr(record, key)
        if value is None:
            continue
        try:
            parse(value)
        except (TypeError, ValueError) as exc:
            field = f"{where}.{key}" if where else key
            raise ModelFormatError(f"metadata field {field!r} {exc}, got {_short(value)}"
                                   ) from None


def one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if text(value) not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value
    return parse


def _list(value: Any) -> list:
    if not isinstance(value, (list, tuple)):
        raise TypeError("must be a list")
    return list(value)


def _object(value: Any) -> Mapping:
    if not isinstance(value, Mapping):
        raise TypeError("must be an object")
    return value


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: messages stay one short line."""
    text_ = repr(value)
    return text_ if len(text_) <= limit else text_[:limit - 1] + "…"
