"""The allowed range of every numeric setting, stated once per setting.

A config dataclass lists its numeric fields' rules in ``BOUNDS`` (field → rule) and calls
:func:`check_bounds` when it is made, so ``TrainConfig(epochs=0)`` is refused in Python; the
command line reads the flag of the same name with the same rule (``rule.parse(text, flag)``),
so ``--epochs 0`` is refused while parsing, before any work. One rule, one message, naming the
setting and the range: ``--epochs must be an integer from 1 to 100000, got '0'``. NaN and
infinity are never in range; an unbounded count would let one typo hang a machine (issue 16:
``--threads 100000`` grew memory until killed, ``--max-steps 0`` trained nothing).

The rules live in the runtime, beside :func:`check_threads`, because the runtime's own
``RunConfig`` needs them and the runtime imports nothing of fcn-edge above it; every other
layer may import the runtime.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Mapping, Protocol

from ..errors import InputError
from .backends.base import check_threads

__all__ = ["Bound", "Many", "Rule", "Size", "Threads", "check_bounds"]


class Rule(Protocol):
    """What a rule does: check a value (Python) and read a flag's text (command line)."""

    def check(self, value: Any, name: str) -> Any: ...
    def parse(self, text: str, name: str) -> Any: ...


@dataclass(frozen=True)
class Bound:
    """A finite integer (or, with ``integer=False``, real number) from ``low`` to ``high``;
    ``low_open``/``high_open`` leave that end out (a learning rate is above 0). ``high`` may be
    ``math.inf`` (finite values only, no upper limit). ``zero`` says what 0 means, if it is
    special (``--progress-every 0``: no progress lines)."""

    low: float
    high: float
    integer: bool = True
    low_open: bool = False
    high_open: bool = False
    zero: str | None = None

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        low, high = _number(self.low), _number(self.high)
        if self.low_open and self.low == 0 and not self.integer:
            text = "positive" + ("" if math.isinf(self.high) else
                                 f" and {'below' if self.high_open else 'at most'} {high}")
        elif math.isinf(self.high):
            finite = kind if self.integer else "a finite number"
            text = f"{finite} {'>' if self.low_open else '≥'} {low}"
        else:
            start = f"above {low}" if self.low_open else f"from {low}"
            text = f"{kind} {start} {'to below' if self.high_open else 'to'} {high}"
        return text + (f" (0: {self.zero})" if self.zero else "")

    def allows(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, Integral if self.integer else Real):
            return False
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def check(self, value: Any, name: str, shown: str | None = None) -> Any:
        if not self.allows(value):
            raise InputError(f"{name} must be {self.describe()}, got {shown or repr(value)}")
        return value

    def parse(self, text: str, name: str) -> int | float:
        try:
            value = int(text) if self.integer else float(text)
        except ValueError:
            value = None
        return self.check(value, name, repr(text))


@dataclass(frozen=True)
class Threads:
    """A thread or process count: 1 … 4 per CPU (:func:`check_threads`); 0 allowed where
    ``zero`` says what it means (``bench --threads 0``: every core)."""

    zero: str | None = None

    def check(self, value: Any, name: str) -> Any:
        return check_threads(value, name, zero=self.zero)

    def parse(self, text: str, name: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = text  # check_threads refuses it, in the same words as a number out of range
        return self.check(value, name)


@dataclass(frozen=True)
class Size:
    """A (height, width) pair, each side within ``side``; written ``HEIGHTxWIDTH``."""

    side: Bound

    def check(self, value: Any, name: str, shown: str | None = None) -> tuple[int, int]:
        try:
            height, width = value
        except (TypeError, ValueError):
            raise InputError(f"{name} must be a (height, width) pair, got {value!r}") from None
        if not (self.side.allows(height) and self.side.allows(width)):
            raise InputError(f"{name} must have each side {self.side.describe()}, got "
                             f"{shown or repr(value)}")
        return int(height), int(width)

    def parse(self, text: str, name: str) -> tuple[int, int]:
        try:
            height, width = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise InputError(f"{name} must look like HEIGHTxWIDTH (e.g. 512x1024), "
                             f"got {text!r}") from None
        return self.check((height, width), name, repr(text))


@dataclass(frozen=True)
class Many:
    """A non-empty tuple of values that each follow ``item`` (``count`` of them when given);
    written comma-separated."""

    item: Bound | Size
    count: int | None = None

    def check(self, value: Any, name: str) -> tuple:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or not value \
                or (self.count is not None and len(value) != self.count):
            how_many = f"{self.count}" if self.count else "one or more"
            raise InputError(f"{name} must be a sequence of {how_many} values, got {value!r}")
        return tuple(self.item.check(v, name) for v in value)

    def parse(self, text: str, name: str) -> tuple:
        items = [t.strip() for t in text.split(",") if t.strip()]
        what = "sizes" if isinstance(self.item, Size) else "numbers"
        if not items:
            raise InputError(f"{name} is empty; give comma-separated {what}")
        if self.count is not None and len(items) != self.count:
            raise InputError(f"{name} takes {self.count} comma-separated {what}, got {text!r}")
        return tuple(self.item.parse(t, name) for t in items)


def check_bounds(config: Any, bounds: Mapping[str, Rule], flags: bool = False) -> None:
    """Check each of ``config``'s fields named in ``bounds`` (a dataclass instance), in
    place: tuples normalised (JSON gives lists). None passes where the field's default is
    None (``max_steps=None``: no limit). Messages name the field, or with ``flags`` its flag
    (``max_frames`` → ``--max-frames``) for configs whose fields are all flags."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for name, rule in bounds.items():
        value = getattr(config, name)
        if value is None and defaults.get(name) is None:
            continue
        checked = rule.check(value, "--" + name.replace("_", "-") if flags else name)
        if isinstance(checked, tuple):
            object.__setattr__(config, name, checked)


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
