"""All of an export's files, or none: written where nobody reads them, then moved into place.

Each file (or folder, as a Triton model) is written into a hidden staging folder beside its
destination — the same file system, so the move is a rename — and only when every one has
been written are they renamed into place, a file or folder that was there before moved
aside first. Any failure on the way (a full disk, a parity failure after a file was staged,
Ctrl-C or SIGTERM: the ``except BaseException``) removes the staging folders and every folder
the export created, and a failure during the renames puts back what was there before. So a
failed export leaves nothing new behind, and a previous good export stays whole: ``fcn-edge
run`` without ``--model``, which takes the newest artifact under ``runs/``, never finds a
partial one. (``kill -9`` cannot be cleaned up after: it can leave a hidden
``.fcn-edge-export.*`` folder, holding only complete files.)

A folder some program reads as it is (``scanned``: a Triton model repository, where the server
takes every subfolder, a hidden one too, for a model and fails to load it) is staged beside
itself instead, in its parent, when that is the same file system, so the reader never sees a
staging folder: a tritonserver started with --exit-on-error would refuse to start on a
repository holding one, and in poll mode it logs a failed load and reports not ready while one
exists. A repository that is a mount point has its parent on another file system, where a
rename cannot reach: its staging folder stays inside it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

STAGING_PREFIX = ".fcn-edge-export."


class Staging:
    """``with Staging() as staging: write(staging.path(final)) …; staging.commit()``."""

    def __init__(self) -> None:
        self._created: list[Path] = []            # folders made here, outermost first
        self._stages: dict[Path, Path] = {}       # destination folder → its staging folder
        self._all_stages: dict[Path, Path] = {}   # … every one there was, for messages
        self._moves: list[tuple[Path, Path]] = []  # staged path → final path
        self._done: list[tuple[Path, Path | None]] = []  # placed: final, the old one aside
        self._scanned: set[Path] = set()          # folders staged beside themselves

    def path(self, final: str | os.PathLike) -> Path:
        """Where to write ``final`` (a file or a folder) now; ``commit`` moves it there."""
        final = Path(final)
        staged = self._stage(final.parent) / final.name
        self._moves.append((staged, final))
        return staged

    def staged(self, final: str | os.PathLike) -> Path:
        """Where ``final``, asked for with ``path``, is being written."""
        final = Path(final)
        return next(staged for staged, each in self._moves if each == final)

    def folder(self, final: str | os.PathLike) -> Path:
        """The staging folder of the destination folder ``final`` (created, as ``final``'s
        missing parents are): a tool that writes a tree of its own writes it there."""
        return self._stage(Path(final))

    def scanned(self, folder: str | os.PathLike) -> None:
        """``folder``'s entries are read as they appear (a Triton model repository): stage
        what goes into it in its parent where a rename can reach from there."""
        self._scanned.add(Path(folder))

    def commit(self) -> None:
        """Move every staged path that was written into place, in the order asked for."""
        for staged, final in self._moves:
            if not staged.exists():  # asked for but not made (no TensorRT: no engine)
                continue
            aside = None
            if final.exists():
                aside = self._stage(final.parent) / f".old.{final.name}"
                os.replace(final, aside)
            self._done.append((final, aside))
            os.replace(staged, final)
        self._done.clear()  # all in place: nothing to put back
        self._remove_stages()

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            return None
        for final, aside in reversed(self._done):  # failed while moving: undo the moves
            _remove(final)
            if aside is not None:
                os.replace(aside, final)
        self._remove_stages()
        for folder in reversed(self._created):
            try:
                folder.rmdir()  # only if empty: whatever another process put there stays
            except OSError:
                pass
        if isinstance(exc, OSError) and exc.filename:  # say the file, not its staged name
            final = self._final(Path(exc.filename))
            if final is not None:
                raise OSError(exc.errno, exc.strerror, str(final)) from exc
        return None

    def _final(self, path: Path) -> Path | None:
        """The destination of a path inside a staging folder (None for any other path)."""
        for folder, stage in self._all_stages.items():
            if path.is_relative_to(stage):
                return folder / path.relative_to(stage)
        return None

    def _stage(self, folder: Path) -> Path:
        if folder not in self._stages:
            self._make(folder)
            self._stages[folder] = self._make_stage(folder)
            self._all_stages[folder] = self._stages[folder]
        return self._stages[folder]

    def _make_stage(self, folder: Path) -> Path:
        """A new staging folder for ``folder``: inside it, or beside it when it is scanned and
        its parent is on the same file system (and writable)."""
        if folder in self._scanned and folder.parent != folder and \
                os.stat(folder).st_dev == os.stat(folder.parent).st_dev:
            try:
                return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, suffix=".partial",
                                             dir=folder.parent))
            except OSError:  # a parent we may not write: inside, as for any folder
                pass
        return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, suffix=".partial", dir=folder))

    def _make(self, folder: Path) -> None:
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for each in reversed(missing):
            try:
                each.mkdir()
            except FileExistsError:  # made by someone else meanwhile: not ours to remove
                continue
            self._created.append(each)

    def _remove_stages(self) -> None:
        for stage in self._stages.values():
            shutil.rmtree(stage, ignore_errors=True)
        self._stages.clear()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
