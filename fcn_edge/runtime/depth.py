"""Depth for image sources (paper §5, RGB-D): ``fcn-edge run --depth DIR``.

An RGB-D artifact takes each frame's depth with it. For a folder (or glob, or one file) of
images, the depth comes from a folder of 16-bit single-channel PNGs in millimetres (NYUDv2's
format, and what depth cameras record), matched to the images by file stem: ``rgb/0042.jpg``
goes with ``depth/0042.png``. Every image's depth is looked up when the source opens, so a
missing file fails at once, naming it, rather than after minutes of running. Video files,
cameras and streams carry no depth that could be matched this way: refused, saying what to do.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..errors import InputError
from .sources import Frame, ImageSource, Log, Source

__all__ = ["DEPTH_SUFFIXES", "DepthImageSource", "match_depth", "read_depth", "with_depth"]

#: Lossless formats that hold 16-bit single-channel images.
DEPTH_SUFFIXES = (".png", ".tif", ".tiff")
_SHOWN = 5  # missing files named in a message


def match_depth(images: list[Path], depth_dir: Path) -> dict[Path, Path]:
    """Each image's depth file: ``depth_dir/<image stem>.png`` (or .tif/.tiff); an InputError
    naming the images that have none."""
    if not depth_dir.is_dir():
        raise InputError(f"--depth {depth_dir}: no such folder; give a folder of 16-bit depth "
                         f"PNGs (millimetres) named like the images")
    stems: dict[str, Path] = {}
    for path in images:
        if stems.setdefault(path.stem, path) != path:
            raise InputError(f"two images named {path.stem} ({stems[path.stem]}, {path}): depth "
                             f"files are matched by file stem, so stems must be unique")
    by_stem: dict[str, Path] = {}
    for path in sorted(depth_dir.iterdir()):
        if path.suffix.lower() in DEPTH_SUFFIXES and path.is_file():
            by_stem.setdefault(path.stem, path)
    missing = [p.name for p in images if p.stem not in by_stem]
    if missing:
        shown = ", ".join(missing[:_SHOWN]) + (f" and {len(missing) - _SHOWN} more"
                                               if len(missing) > _SHOWN else "")
        raise InputError(f"--depth {depth_dir}: no depth for {shown} (depth files are matched "
                         f"by file stem: {Path(missing[0]).stem}.png)")
    return {p: by_stem[p.stem] for p in images}


def read_depth(path: Path) -> np.ndarray:
    """An H×W uint16 depth map (millimetres) from a 16-bit single-channel image file."""
    try:
        data = np.fromfile(path, np.uint8)  # imdecode: non-ASCII paths work on every OS
    except OSError as exc:
        raise InputError(f"{path}: cannot read the depth file ({exc})") from None
    depth = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if depth is None:
        raise InputError(f"{path}: not a readable image (damaged, or a format OpenCV cannot "
                         f"decode)")
    if depth.ndim != 2 or depth.dtype != np.uint16:
        kind = f"{depth.shape[2]} channels" if depth.ndim == 3 else f"{depth.dtype}"
        raise InputError(f"{path}: depth must be a 16-bit single-channel image in millimetres, "
                         f"got {kind}")
    return depth


class DepthImageSource(ImageSource):
    """Still images whose frames carry their depth (``frame.extras["depth"]``, uint16 mm)."""

    def __init__(self, paths: list[Path], depth: dict[Path, Path], description: str,
                 live: bool, log: Log | None) -> None:
        super().__init__(paths, description, live, log)
        self.depth = {image.stem: (image, path) for image, path in depth.items()}

    def __iter__(self) -> Iterator[Frame]:
        for frame in super().__iter__():  # named by file stem, unique (see match_depth)
            path, depth_path = self.depth[frame.name]
            depth = read_depth(depth_path)
            if depth.shape != frame.image.shape[:2]:
                raise InputError(f"{depth_path}: depth is {depth.shape[0]}×"
                                 f"{depth.shape[1]} but {path.name} is {frame.image.shape[0]}×"
                                 f"{frame.image.shape[1]}; depth must be registered to its "
                                 f"image, at its size")
            yield dataclasses.replace(frame, extras={"depth": depth})


def with_depth(source: Source, depth_dir: str | Path, log: Log | None = None) -> ImageSource:
    """``source``'s frames with their depth from ``depth_dir`` (see the module docstring)."""
    if not isinstance(source, ImageSource):
        raise InputError(f"--depth is supported only for image sources for now (a folder, glob "
                         f"or image file), not {source.kind} {source.description}: give the "
                         f"RGB frames as a folder of images (e.g. `ffmpeg -i VIDEO "
                         f"frames/%06d.png`) and --depth a folder of 16-bit depth PNGs in "
                         f"millimetres named like them")
    depth = match_depth(source.paths, Path(depth_dir).expanduser())
    return DepthImageSource(source.paths, depth, f"{source.description} + depth {depth_dir}",
                            source.live, log)
