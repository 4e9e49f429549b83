"""Small helpers shared by every layer (no torch here): crash-safe writing for checkpoints,
exported models and outputs, the check that an output can be written before the work starts,
a file's SHA-256 (the source hash artifacts carry, the engine cache
key), the ``Log`` type of the progress callbacks every command takes, and the lazy package
exports that keep ``import fcn_edge.runtime`` and ``import fcn_edge.models`` instant."""
from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import importlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .errors import FcnEdgeError, InputError

try:
    import resource  # POSIX only
except ImportError:  # pragma: no cover - Windows
    resource = None

#: Where a long operation reports progress, one line at a time (``print`` by default); every
#: command that logs takes one.
Log = Callable[[str], None]


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it atomically replaces ``path``.

    The temporary file lives in the same directory (``os.replace`` is atomic only within one
    file system). It is fsynced before the rename and the directory after it (POSIX: the
    rename itself is durable only once its directory is), so a crash or power cut at any moment
    leaves either the old file or the new one, never a truncated mix. On an exception the
    temporary is removed; a full disk or file size limit becomes an ``OSError`` (ENOSPC,
    EFBIG) naming ``path``, even when the writer (torch, a C library) lost the errno.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp_path = Path(tmp)
    _UNFINISHED.add(tmp_path)
    try:
        os.close(fd)
        # mkstemp creates 0600; give the file the mode a plain open() would (or the old one's).
        os.chmod(tmp_path,
                 target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask())
        try:
            yield tmp_path
            fsync_path(tmp_path)
        except Exception as exc:
            code = _out_of_space(exc, tmp_path)
            if code is None:
                raise
            raise OSError(code, os.strerror(code), str(target)) from exc
        os.replace(tmp_path, target)
        fsync_path(target.parent)
    finally:
        tmp_path.unlink(missing_ok=True)
        _UNFINISHED.discard(tmp_path)


#: Temporaries of writes under way. Ctrl-C or SIGTERM pressed twice can land the second
#: interrupt inside the clean-up of the first (a signal handler's exception arrives between any
#: two lines), before the temporary is removed; what is left here is removed at exit.
_UNFINISHED: set[Path] = set()


@atexit.register
def _remove_unfinished() -> None:
    for path in list(_UNFINISHED):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


#: The errnos of a write that failed for want of room: the disk, a quota, a file size limit.
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a directory's entries, to the disk."""
    if path.is_dir() and os.name == "nt":  # Windows cannot open a directory; NTFS journals it
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _out_of_space(exc: BaseException, tmp: Path) -> int | None:
    """The errno in ``NO_ROOM`` behind a failed write into ``tmp``, or None. torch's writer
    raises RuntimeError("unexpected pos ...") with the errno lost (or only as the context), so
    when no OSError says it, the limits are read: the file at RLIMIT_FSIZE, or the disk full."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in NO_ROOM:
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, FcnEdgeError) or isinstance(exc, OSError) and exc.errno is not None:
        return None  # a refusal of ours, or an OSError that says what it is (permission, I/O)
    try:
        size, disk = tmp.stat().st_size, os.statvfs(tmp.parent)
    except (OSError, AttributeError):  # gone, or no statvfs (Windows)
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0] if resource else -1
    if limit != getattr(resource, "RLIM_INFINITY", -1) and size >= limit:
        return errno.EFBIG
    free = disk.f_bfree if os.geteuid() == 0 else disk.f_bavail  # root may use the reserve
    return errno.ENOSPC if free * disk.f_frsize < _FULL_BELOW else None


#: A failed write is a full disk when less than this is left: the kernel fills the disk to
#: its last block before it answers ENOSPC, so a full disk has nearly nothing free.
_FULL_BELOW = 1 << 20


def check_writable(path: str | os.PathLike, flag: str, *, folder: bool = False) -> Path:
    """Refuse, with one line naming ``flag`` and ``path``, an output that cannot be written —
    before the work starts, so a ten-minute run never fails at the end on its last file.

    ``path`` is a file to (re)write, or with ``folder=True`` a folder to write into; either may
    not exist yet (its folders are made later). The test is a real probe file created and removed
    in the nearest existing folder, so read-only mounts, ACLs and root all answer truthfully.
    """
    target = Path(path)
    if target.exists() and target.is_dir() != folder:
        what = "a folder" if target.is_dir() else "a file"
        want = "a folder to write into" if folder else "a file name"
        raise InputError(f"{flag} {target}: that is {what}; give {want}")
    existing = target if folder and target.is_dir() else target.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{flag} {target}: {existing} is a file, not a folder; "
                         f"choose a path under a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".fcn-edge-probe.", dir=existing)
    except OSError as exc:
        raise InputError(f"{flag} {target}: cannot write in {existing} "
                         f"({exc.strerror or exc}); choose a writable folder") from None
    os.close(fd)
    os.unlink(probe)
    if target.exists() and not folder and not os.access(target, os.W_OK):
        raise InputError(f"{flag} {target}: the file exists and is read-only; "
                         f"choose another path or make it writable")
    return target


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, hex, read ``chunk`` bytes at a time (a VGG16 checkpoint
    is half a gigabyte)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict[str, Any]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's PEP 562 ``__getattr__`` and ``__dir__``: each public name in ``exports``
    (name → submodule) imports its submodule on first use and is then cached in the package's
    ``namespace`` (its ``globals()``), so importing the package itself imports nothing.

        __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
    """
    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
