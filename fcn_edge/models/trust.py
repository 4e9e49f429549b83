"""Which hash a zoo file must have, and checking it: the published one, or trust on first use.

torchvision publishes a hash (a SHA-256 prefix, in the file name), pytorch-fcn an MD5 (written
``md5:HEX``, checked with hashlib as its own ``cached_download`` does); either is checked
strictly (a ``--sha256`` given must agree with it). Sources such as jetson-inference publish
none, so fcn-edge does what ``ssh`` does with a host key: the first download's SHA-256 is
recorded beside the file in the cache, in ``NAME.sha256`` (the format of ``sha256sum``, so
``sha256sum -c`` reads it), and every later download or ``--weights`` copy must match it. A
file that changes at its source is then refused with both hashes instead of being deployed
silently; ``--sha256 HEX`` pins the expected hash (and is recorded), whether to trust a new
file on purpose or to check the first download against a hash obtained elsewhere. Standard
library only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, ModelFormatError
from ..io import Log, atomic_path
from .download import (HashMismatch, _expected_hash, download, file_hash, hash_algorithm,
                       hash_hex, hash_label)

if TYPE_CHECKING:
    from .zoo import PretrainedEntry


@dataclass(frozen=True)
class Expected:
    """The hash a file must have, spelt as ``download.file_hash`` spells one (None: nothing
    known yet, so the file is trusted and its SHA-256 recorded), and where that hash comes
    from, in words for the messages."""

    digest: str | None
    origin: str
    record: Path | None   # the sidecar file; None for a published hash (nothing to record)


def sidecar(path: Path) -> Path:
    """Where the hash of the cached file ``path`` is recorded."""
    return path.with_name(path.name + ".sha256")


def recorded(path: Path) -> str | None:
    """The SHA-256 recorded for the cached file ``path``, or None."""
    return _read(sidecar(path))


def _read(record: Path) -> str | None:
    try:
        text = record.read_text(encoding="utf-8").split()
    except OSError:
        return None
    return text[0].lower() if text else None


def expected(entry: PretrainedEntry, cache: str | Path | None, pin: str | None) -> Expected:
    """The hash ``entry``'s file must have: the published one (``pin`` must agree with it),
    else ``pin``, else the recorded one, else none yet."""
    given = _expected_hash(pin) if pin is not None else None
    if given is not None and hash_algorithm(given) != "sha256":
        raise InputError(f"--sha256 {pin}: give a SHA-256, 64 hex digits")
    if entry.published_hash is not None:
        published = _expected_hash(entry.published_hash)
        if given is not None and not (given.startswith(published) or
                                      published.startswith(given)):
            raise InputError(f"--sha256 {given}: {entry.name}'s source publishes {published}; "
                             f"drop --sha256 (published hashes are always checked)")
        return Expected(given if given and len(given) > len(published) else published,
                        f"the published {hash_label(published)}", None)
    record = sidecar(entry.cached_path(cache))
    if given is not None:
        return Expected(given, "the --sha256 given", record)
    found = recorded(entry.cached_path(cache))
    if found is not None:
        return Expected(found, f"the SHA-256 recorded at the first download ({record})", record)
    return Expected(None, "", record)


@dataclass(frozen=True)
class Verified:
    """A checked file: its path, its hash (SHA-256 hex, or ``md5:HEX`` where the source
    publishes an MD5; empty for an unpacked folder) and the expectation it met."""

    path: Path
    digest: str
    expected: Expected


def fetch_verified(entry: PretrainedEntry, cache: str | Path | None, weights: str | Path | None,
                   pin: str | None, *, progress: bool, log: Log, timeout: float) -> Verified:
    """``entry``'s file, checked: ``weights`` if given, else the cached download (made now if
    absent, with the progress bar). A wrong file is one line naming both hashes, and nothing
    of it is kept. Nothing is recorded yet: :func:`record` does, once the file proved good."""
    want = expected(entry, cache, pin)
    if weights is None:
        path, digest = _cached(entry, cache, want, progress=progress, log=log, timeout=timeout)
        return Verified(path, digest, want)
    path = Path(weights)
    if path.is_dir() and entry.archive is not None:
        return _unpacked_folder(entry, path, pin, want, log)
    if not path.is_file():
        raise InputError(f"--weights {path}: no such file (give the downloaded "
                         f"{entry.file_name})")
    digest = file_hash(path, want.digest or "")
    if want.digest is not None and not digest.startswith(want.digest):
        raise ModelFormatError(f"--weights {path}: {hash_label(digest)} {hash_hex(digest)}, "
                               f"but {want.origin} is {hash_hex(want.digest)}: it is not "
                               f"{entry.name}'s file; nothing was written")
    return Verified(path, digest, want)


def _unpacked_folder(entry: PretrainedEntry, path: Path, pin: str | None, want: Expected,
                     log: Log) -> Verified:
    """An archive's folder already unpacked (jetson-inference's download script deletes the
    archive): used as it is, with no hash (``digest`` empty) — only an archive has one."""
    if pin is not None:
        raise InputError(f"--sha256 checks the archive {entry.file_name}; --weights {path} is "
                         f"a folder, which has no such hash: give the archive, or drop --sha256")
    log(f"--weights {path}: an unpacked folder, used as it is (only the archive "
        f"{entry.file_name} has a hash to check)")
    return Verified(path, "", want)


def _cached(entry: PretrainedEntry, cache: str | Path | None, want: Expected, *,
            progress: bool, log: Log, timeout: float) -> tuple[Path, str]:
    """The cached file and its hash, downloaded first unless it is there and matches."""
    target = entry.cached_path(cache)
    if target.is_file():
        digest = file_hash(target, want.digest or "")
        if want.digest is None or digest.startswith(want.digest):
            return target, digest
    made = _missing_folders(target.parent)
    try:
        download(entry.url, want.digest, target, progress=progress, log=log, timeout=timeout,
                 name=entry.name)
    except HashMismatch as exc:
        _remove_empty(made)
        if want.record is None:
            raise  # the published hash: download's own line (run again, or --weights)
        raise ModelFormatError(_changed(entry, exc, want)) from None
    except BaseException:
        _remove_empty(made)  # a refused or failed download leaves no empty folders behind
        raise
    return target, file_hash(target, want.digest or "")


def _changed(entry: PretrainedEntry, exc: HashMismatch, want: Expected) -> str:
    if want.origin.startswith("the --sha256"):
        return (f"{entry.name}: {exc.url} has SHA-256 {exc.got}, not the --sha256 "
                f"{want.digest} given; the download was removed")
    return (f"{entry.name}: {exc.url} now has SHA-256 {exc.got}, but {want.origin} is "
            f"{want.digest}: the file changed at its source; the download was removed. If you "
            f"trust the new file, run fcn-edge fetch {entry.name} --sha256 {exc.got}")


def record(entry: PretrainedEntry, verified: Verified, log: Log) -> None:
    """Record ``verified``'s hash where the source publishes none and it is new (a first use,
    or a pin that differs from the record), saying so."""
    want, digest = verified.expected, verified.digest
    if want.record is None or not digest or _read(want.record) == digest:
        return
    with atomic_path(want.record) as tmp:
        tmp.write_text(f"{digest}  {entry.file_name}\n", encoding="utf-8")
    how = ("as pinned by --sha256" if want.digest is not None else
           "trusting this first copy: later downloads and --weights files must match it, "
           "and --sha256 HEX pins another")
    log(f"{entry.name}: the source publishes no SHA-256 for {entry.file_name}; recorded "
        f"{verified.path.name}'s, {digest}, in {want.record} ({how})")


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those above it that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (an interrupted download's part stays to resume)
            return


__all__ = ["Expected", "Verified", "expected", "fetch_verified", "record", "recorded",
           "sidecar"]
