"""jetson-inference's model archives: unpacking one safely, and reading its label files.

jetson-inference publishes each segmentation network as a ``.tar.gz`` of one folder
(``FCN-ResNet18-Cityscapes-512x256/``) holding the ONNX graph (``fcn_resnet18.onnx``), the class
names (``classes.txt``, one per line) and their colours (``colors.txt``, ``R G B [A]`` per line).
Read at dusty-nv/jetson-inference @ 45da40a8f3c180191b269f57f736caaa025b8a69:
``data/networks/models.json`` and ``tools/download-models.sh`` (URLs, archive and folder names;
no hashes), ``c/tensorNet.cpp`` (``LoadClassColors``: ``sscanf("%f %f %f %f")``, at most one
colour per class; ``validateClassColors``: missing colours are ``GenerateColor(n)``, the PASCAL
VOC colour map of ``n + 1``).

An archive from the network is untrusted input: :func:`unpack` refuses members that would land
outside the target folder (absolute names, ``..``, links pointing out, devices and FIFOs) before
extracting anything, extracts into a hidden folder beside the target and renames it into place,
so the target folder is either absent or whole. Standard library and numpy only (no torch).
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import ModelFormatError
from ..io import Log, fsync_path
from ..runtime.palette import voc_palette

#: The file in an unpacked folder that records which archive (its SHA-256) it came from.
MARKER = ".fcn-edge-archive.sha256"


@dataclass(frozen=True)
class Archive:
    """What one published archive holds (``models.json``'s ``tar``, ``dir``, ``model``,
    ``labels`` and ``colors``)."""

    file: str                      # the archive's name, e.g. FCN-ResNet18-Cityscapes-512x256.tar.gz
    folder: str                    # the one folder in it
    model: str = "fcn_resnet18.onnx"
    labels: str = "classes.txt"
    colors: str = "colors.txt"


def unpack(archive: Path, dest: Path, spec: Archive, digest: str, log: Log = print) -> Path:
    """``dest/spec.folder`` holding ``archive``'s files: reused when it records ``digest``
    (the archive's SHA-256), else extracted afresh and swapped in whole. Returns the folder."""
    target = dest / spec.folder
    if _recorded(target) == digest:
        return target
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.folder}.", suffix=".unpack", dir=dest))
    try:
        _extract(archive, staging, spec)
        unpacked = staging / spec.folder
        (unpacked / MARKER).write_text(f"{digest}  {archive.name}\n", encoding="utf-8")
        _swap_in(unpacked, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"unpacked {archive.name} into {target}")
    return target


def _recorded(folder: Path) -> str | None:
    try:
        return (folder / MARKER).read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError):
        return None


def _extract(archive: Path, into: Path, spec: Archive) -> None:
    """Check every member, then extract them all into ``into``; a damaged or truncated
    archive, or one without ``spec``'s model, is one ModelFormatError."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()  # reads the whole archive: truncation shows here
            for member in members:
                check_member(member, archive)
            if hasattr(tarfile, "data_filter"):  # Python 3.12, and 3.8.17+/3.11.4+ backports
                tar.extractall(into, filter="data")
            else:  # pragma: no cover - older Pythons: check_member is the whole guard
                tar.extractall(into)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, tarfile.TarError) and \
                exc.filename is not None:
            raise  # a write that failed (disk full …), not the archive
        raise ModelFormatError(f"{archive}: not a whole .tar.gz archive ({exc}); fetch it "
                               f"again, or pass a good copy with --weights") from None
    if not (into / spec.folder / spec.model).is_file():
        raise ModelFormatError(f"{archive}: has no {spec.folder}/{spec.model}; it is not the "
                               f"archive this zoo entry names")


def check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse a member that could write outside the folder it is extracted into."""
    path = PurePosixPath(member.name)
    why = None
    if path.is_absolute() or member.name.startswith(("/", "\\")):
        why = "an absolute path"
    elif ".." in path.parts:
        why = "a '..' component"
    elif member.issym() or member.islnk():
        link = PurePosixPath(member.linkname)
        base = path.parent if member.issym() else PurePosixPath()
        if link.is_absolute() or _escapes(base / link):
            why = f"a link to {member.linkname}, outside the archive's folder"
    elif not (member.isfile() or member.isdir()):
        why = "a device, FIFO or other special file"
    if why:
        raise ModelFormatError(f"{archive}: member {member.name!r} is {why}; refused, nothing "
                               f"was extracted (the archive is not jetson-inference's)")


def _escapes(path: PurePosixPath) -> bool:
    """Whether a relative path climbs above its start once its ``..`` are applied."""
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return True
    return False


def _swap_in(unpacked: Path, target: Path) -> None:
    """Rename ``unpacked`` to ``target``; an older ``target`` is moved aside first (a folder
    cannot be replaced by a rename) and removed after."""
    fsync_path(unpacked)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(unpacked, target)
    fsync_path(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- label files -----------------------------------------------------------------------------

def read_colors(path: Path, count: int, fallback: np.ndarray, log: Log = print) -> np.ndarray:
    """``count`` colours (N×3 uint8) from a ``colors.txt``: ``R G B`` or ``R G B A`` per line
    (the alpha is segNet's overlay opacity, not a colour: dropped), blank lines skipped. Like
    segNet, extra lines are ignored and missing colours come from ``fallback``."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            values = []
        if len(values) not in (3, 4) or not all(0 <= v <= 255 for v in values[:3]):
            raise ModelFormatError(f"{path} line {number}: {line.strip()!r} is not 'R G B' "
                                   f"(0..255 each); fix the line or delete the file")
        rows.append([round(v) for v in values[:3]])
    if len(rows) != count:
        log(f"{path.name} has {len(rows)} colours for {count} classes; "
            + ("the extra ones are ignored" if len(rows) > count else
               "the rest take jetson-inference's default colours"))
    colors = np.array(fallback[:count], np.uint8).reshape(count, 3)
    given = np.array(rows[:count], np.uint8).reshape(-1, 3)
    colors[:len(given)] = given
    return colors


def jetson_palette(n: int) -> np.ndarray:
    """segNet's colours for classes without a ``colors.txt`` line: ``GenerateColor(n)``, the
    PASCAL VOC colour map shifted by one (class 0 gets VOC's dark red, not black)."""
    return voc_palette(n + 1)[1:]


def deepscene_palette(n: int) -> np.ndarray:
    """DeepScene's published colours (trail, grass, vegetation, obstacle, sky)."""
    from .pretrained_data import DEEPSCENE_COLORS

    return np.array(DEEPSCENE_COLORS[:n], np.uint8).reshape(-1, 3)
