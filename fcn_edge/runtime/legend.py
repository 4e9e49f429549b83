"""The class legend drawn on overlays (OpenCV): which colour is which class.

A semi-transparent panel in a corner of the frame, one colour swatch and class name per row,
sized from the frame's height so that it reads on a 240-line frame and a 4K one alike (see
:func:`draw_legend` for its rules). ``Segmenter.overlay(..., legend=True)``, ``fcn-edge run
--legend`` and the demo's sample grid draw it.
"""
from __future__ import annotations

import functools
import math
import unicodedata
from dataclasses import dataclass
from numbers import Real
from typing import Iterable, Sequence

import numpy as np

from ..errors import InputError
from .palette import colours
__all__ = ["draw_legend", "legend_classes", "ascii_name", "PRESENT_ONLY_ABOVE",
           "LEGEND_CORNERS"]

#: Above this many classes, a legend given the frame's labels lists only the classes present
#: in it: VOC's 21 rows in every frame would cover much of a 480-line frame, most of them
#: classes that are not there. Up to this many, every class is listed, steady across a video.
PRESENT_ONLY_ABOVE = 12
#: Where a legend goes; the first is the default (cameras print their clock top-left).
LEGEND_CORNERS = ("top-right", "top-left", "bottom-right", "bottom-left")
_CAP = 21          # px: the capitals' height of OpenCV's Hershey simplex font at scale 1
_MIN_ROW = 13      # px: the smallest row whose text is still legible (6-7 px capitals)
_MAX_ROW = 64      # px: rows stop growing here (a 1400-line frame and beyond)
_MIN_TEXT = "Abc"  # a column too narrow for a swatch and this much text is not drawn
# Letters that Unicode's decomposition does not turn into an ASCII letter and an accent.
_SPELLED = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o",
                          "Ø": "O", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D",
                          "þ": "th", "Þ": "Th", "ı": "i", "–": "-", "—": "-", "‘": "'",
                          "’": "'", "“": '"', "”": '"', "…": "..."})


def ascii_name(name: str, index: int) -> str:
    """``name`` in the ASCII that OpenCV's Hershey fonts can draw: accents dropped (é → e),
    a few letters spelled out (ß → ss, æ → ae, ø → o, ł → l), any other character "?", runs of
    white space one space. A name of which fewer than half the characters have an ASCII form
    (道路, an empty name) is shown as ``class INDEX`` instead of a row of question marks."""
    text = unicodedata.normalize("NFKD", " ".join(str(name).translate(_SPELLED).split()))
    text = "".join("?" if not " " <= c <= "~" else c for c in text
                   if not unicodedata.combining(c))
    return text if text and 2 * text.count("?") <= len(text) else f"class {index}"


def legend_classes(num_classes: int, present: np.ndarray | Iterable[int] | None = None,
                   only_present: bool | None = None) -> list[int]:
    """The class ids a legend lists, in id order: every class, or those in ``present`` (the
    frame's label map, or class ids) when ``only_present`` is True. ``only_present=None`` is
    the rule: only those present when ``present`` is given and there are more than
    :data:`PRESENT_ONLY_ABOVE` classes. Ids outside 0..num_classes-1 (255 = ignore) are left
    out."""
    if only_present is None:
        only_present = present is not None and num_classes > PRESENT_ONLY_ABOVE
    if not only_present:
        return list(range(num_classes))
    if present is None:
        raise InputError("only_present=True needs present= (the frame's labels or class ids)")
    values = np.asarray(present).ravel()
    if values.size and values.dtype.kind not in "iu":
        raise InputError(f"present must be a label map or class ids (integers), got "
                         f"{values.dtype} values")
    if values.dtype == np.uint8 and values.size:  # OpenCV counts 5x faster than bincount
        import cv2

        counts = cv2.calcHist([values.reshape(1, -1)], [0], None, [256], [0, 256]).ravel()
    else:
        values = values[(values >= 0) & (values < num_classes)].astype(np.int64)
        counts = np.bincount(values, minlength=num_classes)
    return np.flatnonzero(counts[:num_classes]).tolist()


def draw_legend(image: np.ndarray, classes: Sequence[str], palette, *,
                present: np.ndarray | Iterable[int] | None = None,
                only_present: bool | None = None, position: str = "top-right",
                max_width: float = 0.4, max_height: float = 0.9, opacity: float = 0.6,
                color: str = "bgr", inplace: bool = False) -> np.ndarray:
    """``image`` with a class legend in a corner: a panel darkened by ``opacity``, and per
    class a swatch of its colour and its name, white text outlined in black (legible on any
    background). Returns a new image (``inplace=True``: draws into ``image`` and returns it).

    Args:
        image: H×W×3 uint8, in ``color`` order (``bgr`` as OpenCV, or ``rgb``).
        classes: class names; drawn in ASCII (see :func:`ascii_name`).
        palette: RGB colours, one per class, as artifacts' metadata holds them.
        present, only_present: which classes are listed (see :func:`legend_classes`): with
            more than :data:`PRESENT_ONLY_ABOVE` classes and the frame's labels as
            ``present``, only the classes in the frame.
        position: a corner from :data:`LEGEND_CORNERS`.
        max_width, max_height: the panel's largest share of the frame's width and height.

    Sizes follow the frame's height: a row is H/22 pixels, 13 to 64 (22 at 480 lines, 49 at
    1080). Classes that do not fit in one column go into more, side by side; names too long
    for the width are cut with ".."; when even that leaves classes out, the last row says
    "+N more". A frame too small for one row of swatch and three letters gets no legend (it
    is returned unchanged, no error); so do zero classes, or none present.
    """
    _check_legend_args(image, position, max_width, max_height, opacity, color)
    rgb = colours(palette)
    if len(rgb) < len(classes):
        raise InputError(f"a legend needs a colour per class: {len(classes)} classes but "
                         f"{len(rgb)} colours")
    out = image if inplace else np.array(image)
    ids = legend_classes(len(classes), present, only_present)
    names = tuple(ascii_name(classes[i], i) for i in ids)
    layout = _legend_layout(out.shape[0], out.shape[1], names, max_width, max_height)
    if layout is None:
        return out
    swatches = tuple(tuple(int(v) for v in (rgb[i] if color == "rgb" else rgb[i][::-1]))
                     for i in ids)
    _draw_legend(out, layout, swatches, position, float(opacity))
    return out


def _check_legend_args(image, position: str, max_width: float, max_height: float,
                       opacity: float, color: str) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3):
        raise InputError(f"a legend is drawn on an H×W×3 uint8 image, got "
                         f"{getattr(image, 'dtype', type(image).__name__)} "
                         f"{getattr(image, 'shape', '')}")
    if position not in LEGEND_CORNERS:
        raise InputError(f"legend position must be one of {', '.join(LEGEND_CORNERS)}, "
                         f"got {position!r}")
    if color not in ("bgr", "rgb"):
        raise InputError(f"color must be 'bgr' or 'rgb', got {color!r}")
    for name, value, lowest in (("max_width", max_width, 0.01),
                                ("max_height", max_height, 0.01), ("opacity", opacity, 0)):
        if isinstance(value, bool) or not isinstance(value, Real) or not lowest <= value <= 1:
            raise InputError(f"legend {name} must be a number from {lowest} to 1, got {value!r}")


@dataclass(frozen=True)
class _Layout:
    """Where a legend's rows go, in pixels, for one frame size and list of names."""

    row: int           # height of a row
    pad: int           # the panel's inner margin, and its distance from the frame's edges
    swatch: int        # side of a colour square
    gap: int           # between a swatch and its name
    column_gap: int
    scale: float       # font scale
    thickness: int     # of the text's strokes, and of its black outline
    text_width: int    # of each column's names
    rows: int          # per column
    texts: tuple[str, ...]   # as drawn: cut to text_width, the last maybe "+N more"
    more: bool         # the last text is "+N more", without a swatch

    @property
    def size(self) -> tuple[int, int]:
        """The panel's (height, width)."""
        columns = math.ceil(len(self.texts) / self.rows)
        cell = self.swatch + self.gap + self.text_width
        return (2 * self.pad + self.rows * self.row,
                2 * self.pad + columns * cell + (columns - 1) * self.column_gap)


@functools.lru_cache(maxsize=64)  # a video asks for the same layout frame after frame
def _legend_layout(height: int, width: int, names: tuple[str, ...], max_width: float,
                   max_height: float) -> _Layout | None:
    """Rows, columns and text widths that fit the panel into its share of the frame; None
    when not one row of swatch and a few letters fits, or there is nothing to list."""
    import cv2

    row = min(_MAX_ROW, max(_MIN_ROW, round(height / 22)))
    pad, thickness = max(2, row // 5), max(1, round(row / 24))
    scale = 0.5 * row / _CAP  # capitals half a row high, descenders inside it
    swatch, gap, column_gap = row - 2 * max(1, row // 8), max(3, row // 4), row // 2

    def text_width(text: str) -> int:  # + the outline each side
        size = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0]
        return size + 2 * thickness

    # The panel (its own padding inside) keeps `pad` from the frame's edges: with max_width
    # 1.0 it must still end inside the frame, a margin from its far edge.
    room_w = min(int(max_width * width), width - 2 * pad) - 2 * pad
    room_h = int(max_height * height) - 4 * pad
    rows_fit, cell = room_h // row, swatch + gap + text_width(_MIN_TEXT)
    columns_fit = (room_w + column_gap) // (cell + column_gap)
    if not names or rows_fit < 1 or columns_fit < 1:
        return None
    columns = min(columns_fit, math.ceil(len(names) / rows_fit))
    texts, more = names, len(names) > columns * rows_fit
    if more:  # the last row that fits counts the classes left out
        kept = columns * rows_fit - 1
        texts = names[:kept] + (f"+{len(names) - kept} more",)
    widest = (room_w - (columns - 1) * column_gap) // columns - swatch - gap
    text_w = min(widest, max(text_width(t) for t in texts))
    texts = tuple(_cut(t, text_w, text_width) for t in texts)
    return _Layout(row, pad, swatch, gap, column_gap, scale, thickness, text_w,
                   math.ceil(len(texts) / columns), texts, more)


def _cut(text: str, width: int, text_width) -> str:
    """``text``, or as much of it as fits ``width`` with ".." after it."""
    if text_width(text) <= width:
        return text
    for end in range(len(text) - 1, 0, -1):
        if text_width(text[:end].rstrip() + "..") <= width:
            return text[:end].rstrip() + ".."
    return text[:1]


def _draw_legend(image: np.ndarray, layout: _Layout, swatches: tuple[tuple[int, int, int], ...],
                 position: str, opacity: float) -> None:
    """Darken the panel's area of ``image`` and lay the legend's ink over it."""
    import cv2

    (ph, pw), (h, w), pad = layout.size, image.shape[:2], layout.pad
    y0 = pad if position.startswith("top") else h - pad - ph
    x0 = pad if position.endswith("left") else w - pad - pw
    ink, see_through = _legend_ink(layout, swatches)
    panel = image[y0:y0 + ph, x0:x0 + pw]
    darker = cv2.convertScaleAbs(panel, alpha=1.0 - opacity)
    panel[...] = cv2.add(ink, cv2.multiply(darker, see_through, scale=1 / 255))


@functools.lru_cache(maxsize=8)  # 3 MB each for 21 rows at 1080 lines
def _legend_ink(layout: _Layout, swatches: tuple[tuple[int, int, int], ...]
                ) -> tuple[np.ndarray, np.ndarray]:
    """The panel's swatches and text, drawn once per layout: (ink, see-through) such that
    ``ink + see_through / 255 · background`` is the legend drawn over any background. It is
    drawn on a black and on a white canvas; the difference is how much background each pixel
    lets through (all of it around the rows, none under a swatch, some at antialiased edges).
    Outlined text drawn on every frame took 3-7 ms for 8-21 rows; this takes 0.1-2 ms."""
    black, white = (np.full((*layout.size, 3), value, np.uint8) for value in (0, 255))
    for canvas in (black, white):
        _draw_rows(canvas, layout, swatches)
    return black, white - black


def _draw_rows(image: np.ndarray, layout: _Layout,
               swatches: tuple[tuple[int, int, int], ...]) -> None:
    """Each row's swatch and outlined name, column by column, on a panel-sized image."""
    import cv2

    s = layout.swatch
    for k, text in enumerate(layout.texts):
        column, r = divmod(k, layout.rows)
        x = layout.pad + column * (s + layout.gap + layout.text_width + layout.column_gap)
        y = layout.pad + r * layout.row
        if not (layout.more and k == len(layout.texts) - 1):
            top = y + (layout.row - s) // 2
            cv2.rectangle(image, (x, top), (x + s - 1, top + s - 1), swatches[k], -1)
            # a light edge: a black (background) swatch still shows on the dark panel
            cv2.rectangle(image, (x, top), (x + s - 1, top + s - 1), (192, 192, 192), 1)
        origin = (x + s + layout.gap + 1, y + (layout.row + round(layout.scale * _CAP)) // 2)
        _outlined_text(image, text, origin, layout.scale, layout.thickness)


def _outlined_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float,
                   thickness: int) -> None:
    """White text in a black outline. The outline is the text drawn shifted around it, not
    the text drawn bolder: Hershey letters advance by their stroke's thickness, so a bolder
    word would run ahead of the white one."""
    import cv2

    (x, y), o, font = origin, thickness, cv2.FONT_HERSHEY_SIMPLEX
    for dx, dy in ((-o, -o), (0, -o), (o, -o), (-o, 0), (o, 0), (-o, o), (0, o), (o, o)):
        cv2.putText(image, text, (x + dx, y + dy), font, scale, (0, 0, 0), thickness,
                    cv2.LINE_AA)
    cv2.putText(image, text, origin, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
