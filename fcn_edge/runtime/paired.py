"""Image sources paired with their other modalities (paper §5): ``fcn-edge run --depth DIR``,
``--hha DIR``, or ``--input NAME=DIR`` for any registered modality.

An RGB-D or RGB-HHA artifact takes each frame's depth or HHA with it. For a folder (or glob, or
one file) of images they come from folders of files matched to the images by file stem
(``rgb/0042.jpg`` goes with ``depth/0042.png``), each read by its modality's reader
(``modalities.MODALITIES[name].read``):

* ``depth``: 16-bit single-channel PNGs (or TIFFs) in millimetres — NYUDv2's format and what
  depth cameras record;
* ``hha``: 8-bit 3-channel PNGs, channels in file order (disparity, height, angle), as Gupta et
  al.'s ``saveHHA.m`` writes them and ``fcn_edge.data`` reads NYUDv2's.

Every image's files are looked up when the source opens, so a missing one fails at once,
naming it, rather than after minutes of running. Video files, cameras and streams carry nothing
that could be matched this way: refused, saying what to do.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator, Mapping

from ..errors import InputError
from ..io import Log
from .modalities import file_reader, get_modality, read_depth, read_hha
from .sources import Frame, ImageSource, Source

__all__ = ["FILE_SUFFIXES", "PairedImageSource", "match_files", "read_depth", "read_hha",
           "with_extras"]

#: Lossless formats that hold 16-bit or 3-channel 8-bit images.
FILE_SUFFIXES = (".png", ".tif", ".tiff")
_SHOWN = 5  # missing files named in a message


def match_files(images: list[Path], folder: Path, modality: str) -> dict[Path, Path]:
    """Each image's ``modality`` file: ``folder/<image stem>.png`` (or .tif/.tiff); an
    InputError naming the images that have none, or when two images share a stem."""
    flag = f"--{modality} {folder}"
    if not folder.is_dir():
        raise InputError(f"{flag}: no such folder; give a folder of "
                         f"{get_modality(modality).files} named like the images")
    stems: dict[str, Path] = {}
    for path in images:
        if stems.setdefault(path.stem, path) != path:
            raise InputError(f"two images named {path.stem} ({stems[path.stem]}, {path}): "
                             f"{modality} files are matched by file stem, so stems must be "
                             f"unique")
    by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in FILE_SUFFIXES and path.is_file():
            by_stem.setdefault(path.stem, path)
    missing = [p.name for p in images if p.stem not in by_stem]
    if missing:
        shown = ", ".join(missing[:_SHOWN]) + (f" and {len(missing) - _SHOWN} more"
                                               if len(missing) > _SHOWN else "")
        raise InputError(f"{flag}: no {modality} for {shown} ({modality} files are matched "
                         f"by file stem: {Path(missing[0]).stem}.png)")
    return {p: by_stem[p.stem] for p in images}


class PairedImageSource(ImageSource):
    """Still images whose frames carry their other modalities (``frame.extras``)."""

    def __init__(self, paths: list[Path], files: Mapping[str, Mapping[Path, Path]],
                 description: str, live: bool, log: Log | None) -> None:
        super().__init__(paths, description, live, log)
        self.files = {m: {image.stem: (image, path) for image, path in matched.items()}
                      for m, matched in files.items()}
        self.readers = {m: file_reader(m) for m in files}

    def __iter__(self) -> Iterator[Frame]:
        for frame in super().__iter__():  # named by file stem, unique (see match_files)
            extras = {}
            for modality, by_stem in self.files.items():
                image, path = by_stem[frame.name]
                array = self.readers[modality](path)
                if array.shape[:2] != frame.image.shape[:2]:
                    raise InputError(f"{path}: {modality} is {array.shape[0]}×{array.shape[1]} "
                                     f"but {image.name} is {frame.image.shape[0]}×"
                                     f"{frame.image.shape[1]}; it must be registered to its "
                                     f"image, at its size")
                extras[modality] = array
            yield dataclasses.replace(frame, extras=extras)


def with_extras(source: Source, folders: Mapping[str, str | Path],
                log: Log | None = None) -> Source:
    """``source``'s frames with their modalities from ``folders`` (modality → folder; see the
    module docstring); ``source`` itself when there are none."""
    if not folders:
        return source
    flags = " and ".join(f"--{m}" for m in folders)
    if not isinstance(source, ImageSource):
        raise InputError(f"{flags} work{'s' if len(folders) == 1 else ''} only with image "
                         f"sources for now (a folder, glob or image file), not {source.kind} "
                         f"{source.description}: give the RGB frames as a folder of images "
                         f"(e.g. `ffmpeg -i VIDEO frames/%06d.png`) and {flags} folders of "
                         f"files named like them")
    for modality in folders:
        file_reader(modality)  # an unknown or unreadable one fails before files are matched
    files = {m: match_files(source.paths, Path(folder).expanduser(), m)
             for m, folder in folders.items()}
    described = ", ".join(f"{m} {folder}" for m, folder in folders.items())
    return PairedImageSource(source.paths, files, f"{source.description} + {described}",
                             source.live, log)
