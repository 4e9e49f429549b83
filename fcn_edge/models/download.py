"""Downloading published weights into a cache: the library part of ``fcn-edge fetch``.

Only the standard library (urllib) and no torch, so a box can fetch without the training stack.
Nothing downloads at import or behind the user's back: :func:`download` is called on purpose,
with the hash the source publishes (a SHA-256, or an MD5 written ``md5:HEX``: all pytorch-fcn
publishes). The file streams into ``NAME.part`` beside its target; an interrupted download
keeps that part and the next call asks the server only for the rest (an HTTP ``Range`` request;
a server that ignores it answers 200 and the part starts over). The hash is checked before the
part is renamed into place, so the target is either absent or whole and verified, and a file
already there with the right hash is never fetched again. A web page where a file is expected
(Google Drive's "can't scan for viruses" page for a large file) is refused before a byte of it
is written.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from .. import __version__
from ..errors import FcnEdgeError, InputError, ModelFormatError
from ..io import Log, check_writable, fsync_path

#: Overrides the cache folder (as ``TORCH_HOME`` does torch.hub's).
CACHE_ENV = "FCN_EDGE_CACHE"
#: What to do when no download is possible: every command taking a zoo name takes the file.
OFFLINE_HINT = "or pass the file you downloaded yourself with --weights FILE"
_CHUNK = 1 << 16
_HEX = re.compile(r"[0-9a-f]{8,64}")
_MD5 = re.compile(r"md5:[0-9a-f]{32}")
#: hashlib's name of each algorithm an expected hash may name → the name messages use.
HASH_LABELS = {"sha256": "SHA-256", "md5": "MD5"}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


def cache_dir() -> Path:
    """Where downloads go: ``$FCN_EDGE_CACHE``, else ``$XDG_CACHE_HOME/fcn-edge``, else
    ``~/.cache/fcn-edge`` — torch.hub's rule for ``$TORCH_HOME`` (``_get_torch_home``),
    which pip and huggingface_hub share: the XDG base directory spec's cache home."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "fcn-edge"


class HashMismatch(ModelFormatError):
    """A downloaded file whose hash is not the expected one (it was removed); ``got`` and
    ``expected`` let a caller that knows where the expectation came from say so."""

    def __init__(self, message: str, url: str, got: str, expected: str) -> None:
        super().__init__(message)
        self.url, self.got, self.expected = url, got, expected


def download(url: str, sha256: str | None, dest: str | os.PathLike | None = None, *,
             progress: bool = True, log: Log = print, timeout: float = 30.0,
             name: str = "") -> Path:
    """Fetch ``url`` into ``dest`` (default: the cache folder, under the URL's file name) and
    return its path once its hash matches ``sha256``.

    ``sha256`` is the hex digest the source publishes, or a prefix of it of at least 8 digits
    (torchvision publishes only the prefix in its file names, as torch.hub's ``check_hash``
    reads it), or ``md5:`` and the 32 hex digits of an MD5 (all pytorch-fcn publishes; its
    ``fcn.data.cached_download`` checks that). None checks nothing: for a source that
    publishes no hash, whose caller records and compares one itself (the zoo's trust on first
    use). ``progress`` draws a tqdm bar when tqdm is installed, else logs a line every tenth;
    ``timeout`` bounds each connection and each wait for data, in seconds; ``name`` (a zoo
    name) goes into the log line. Network failures and a wrong hash (:class:`HashMismatch`)
    raise one line naming the URL and what to do.
    """
    expected = _expected_hash(sha256) if sha256 is not None else ""
    label = hash_label(expected)
    target = Path(dest) if dest is not None else cache_dir() / _file_name(url)
    if target.is_file():
        if file_hash(target, expected).startswith(expected):
            return target
        log(f"{target}: its {label} is not the expected one; downloading it again")
    check_writable(target, CACHE_ENV if dest is None else "download to")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    _fetch(url, part, timeout, progress, log, name)
    got = file_hash(part, expected)
    if not got.startswith(expected):
        part.unlink()
        raise HashMismatch(
            f"{url}: {label} {hash_hex(got)}, expected {hash_hex(expected)}; the download was "
            f"removed — run again, {OFFLINE_HINT} if this repeats", url, got, expected)
    os.replace(part, target)  # the part was fsynced as it closed
    fsync_path(target.parent)  # and the rename is durable once its folder is
    return target


def _expected_hash(sha256: str) -> str:
    """A published hash, checked and spelt as :func:`file_hash` spells a file's: a SHA-256 (64
    hex digits, or a prefix of at least 8; ``sha256:`` may lead) as bare hex, an MD5 as
    ``md5:`` and its 32 hex digits."""
    digest = str(sha256).strip().lower().removeprefix("sha256:")
    if not (_HEX.fullmatch(digest) or _MD5.fullmatch(digest)):
        raise InputError(f"hash {sha256!r}: give the published SHA-256, 64 hex digits (or a "
                         f"prefix of at least 8), or an MD5 as md5:<32 hex digits>")
    return digest


def hash_algorithm(expected: str) -> str:
    """hashlib's name of the algorithm of ``expected`` (as :func:`_expected_hash` spells it;
    an empty one is SHA-256)."""
    return "md5" if expected.startswith("md5:") else "sha256"


def hash_label(expected: str) -> str:
    """``SHA-256`` or ``MD5``: the algorithm of ``expected``, for messages."""
    return HASH_LABELS[hash_algorithm(expected)]


def hash_hex(expected: str) -> str:
    """The hex digits of ``expected``, without its ``md5:``."""
    return expected.rpartition(":")[2]


def file_hash(path: str | os.PathLike, expected: str = "", chunk: int = 1 << 20) -> str:
    """The hash of a file's bytes in the algorithm of ``expected``, spelt the same way, so
    ``file_hash(path, expected).startswith(expected)`` says whether the file is the one
    expected (a VGG16 file is half a gigabyte: read ``chunk`` bytes at a time)."""
    algorithm = hash_algorithm(expected)
    digest = hashlib.new(algorithm, usedforsecurity=algorithm != "md5")
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return ("md5:" if algorithm == "md5" else "") + digest.hexdigest()


def _file_name(url: str) -> str:
    name = urllib.parse.unquote(Path(urllib.parse.urlparse(url).path).name)
    if not name:
        raise InputError(f"{url}: the URL names no file; give dest= the path to write")
    return name


def _fetch(url: str, part: Path, timeout: float, progress: bool, log: Log, name: str) -> None:
    """Stream ``url`` into ``part``, resuming after the bytes already there."""
    have = part.stat().st_size if part.exists() else 0
    response = _open(url, have, timeout)
    if response is None:  # 416: the part is already as long as the file, or longer than it
        part.unlink()
        have, response = 0, _open(url, 0, timeout)
    with response:
        _refuse_web_page(response, url, have)
        asked = have
        have, total = _resume_point(response, have)
        if have:
            log(f"resuming {url} at {have} bytes")
        elif asked:
            log(f"{url}: the server ignores Range, so it cannot resume; starting over")
        else:
            log(f"downloading {url}{f' ({name})' if name else ''} to {part.with_suffix('')}")
        with open(part, "ab" if have else "wb") as out:
            _copy(response, out, url, have, total, _Progress(part.stem, total, have, progress,
                                                             log))
            out.flush()
            os.fsync(out.fileno())


def _open(url: str, have: int, timeout: float) -> http.client.HTTPResponse | None:
    """The server's response, asking for the bytes from ``have`` on; None for a 416."""
    request = urllib.request.Request(url, headers={"User-Agent": f"fcn-edge/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:
            return None
        raise FcnEdgeError(f"{url}: the server answered HTTP {exc.code} {exc.reason}; check "
                           f"the address, {OFFLINE_HINT}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (socket.timeout, TimeoutError)):
            reason = f"no answer within {timeout:g} s"
        raise FcnEdgeError(f"{url}: cannot connect ({reason}); check the network, "
                           f"{OFFLINE_HINT}") from None


def _refuse_web_page(response: http.client.HTTPResponse, url: str, have: int) -> None:
    """Refuse an HTML answer where a weights file is expected, before any of it is written.
    Google Drive answers a plain GET of a large file's ``uc?id=`` link with a "can't scan for
    viruses" page that asks a person to confirm; its confirmation is a form with a
    per-request token, which fcn-edge does not script: a browser downloads the file."""
    declared = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    start = b"" if have else response.peek(64)[:64].lstrip().lower()  # resumed: mid-file
    if declared != "text/html" and not start.startswith((b"<!doctype html", b"<html")):
        return
    raise FcnEdgeError(f"{url}: the server answered with a web page, not the file (the source "
                       f"serves a confirmation page, as Google Drive does for large files); "
                       f"download it in a browser from {url} and pass it with --weights FILE")


def _resume_point(response: http.client.HTTPResponse, have: int) -> tuple[int, int | None]:
    """(bytes kept from the part, the whole file's size or None) for this response: a 206
    continues at its Content-Range; anything else is the whole file from its first byte."""
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if match and int(match[1]) == have:
            return have, None if match[2] == "*" else int(match[2])
    if response.status == 206:  # a range we did not ask for: cannot be appended
        raise FcnEdgeError(f"{response.url}: the server sent a range other than bytes={have}-; "
                           f"delete the .part file and run again, {OFFLINE_HINT}")
    length = response.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _copy(response: http.client.HTTPResponse, out: BinaryIO, url: str, have: int,
          total: int | None, bar: "_Progress") -> None:
    """Append the body to ``out``; a connection that ends early leaves what arrived in the
    part and raises the line that says to run again."""
    done = have
    try:
        while chunk := response.read1(_CHUNK):  # as it arrives: a timeout loses nothing
            out.write(chunk)
            done += len(chunk)
            bar.update(done)
    except (http.client.IncompleteRead, OSError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, (ConnectionError, TimeoutError,
                                                             socket.timeout)):
            raise  # a write that failed (disk full, …), not the network
        reason = "no data within the timeout" if isinstance(exc, (TimeoutError, socket.timeout)) \
            else "the connection closed"
        _stopped(url, done, total, reason, out)
    finally:
        bar.close()
    if total is not None and done < total:
        _stopped(url, done, total, "the connection closed", out)


def _stopped(url: str, done: int, total: int | None, reason: str, out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())  # keep what arrived, so the next run resumes after it
    of = f" of {total}" if total is not None else ""
    raise FcnEdgeError(f"{url}: the download stopped after {done}{of} bytes ({reason}); run "
                       f"again to resume from there, {OFFLINE_HINT}")


class _Progress:
    """A tqdm bar on stderr when tqdm is installed (the train extra), else a log line at each
    tenth of the file (or each 8 MiB when the server does not say its size)."""

    def __init__(self, name: str, total: int | None, start: int, enabled: bool,
                 log: Log) -> None:
        self.log, self.total, self.last = (log if enabled else None), total, start
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, initial=start, desc=name, unit="B", unit_scale=True,
                            unit_divisor=1024, file=sys.stderr)

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.last)
            self.last = done
        elif self.log is not None:
            step = self.total // 10 if self.total else 8 << 20
            if done - self.last >= max(step, 1) or done == self.total:
                of = f" of {self.total} ({100 * done // self.total} %)" if self.total else ""
                self.log(f"  {done} bytes{of}")
                self.last = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
