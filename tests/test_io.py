import errno
import hashlib
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from faults import read_only_folder
from fcn_edge.errors import InputError
from fcn_edge.io import atomic_path, check_writable, file_sha256


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "model.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_bytes(b"new")
        assert not target.exists()  # nothing visible until the write completes
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["model.bin"]


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half-written")
            raise RuntimeError("crash")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_atomic_path_gives_new_files_the_umask_mode_and_keeps_old_modes(tmp_path):
    import os

    old = os.umask(0o027)
    try:
        fresh = tmp_path / "fresh.bin"
        with atomic_path(fresh) as tmp:
            tmp.write_bytes(b"x")
        assert fresh.stat().st_mode & 0o777 == 0o640  # 0o666 & ~0o027, not mkstemp's 0o600
        kept = tmp_path / "kept.bin"
        kept.write_bytes(b"old")
        kept.chmod(0o604)
        with atomic_path(kept) as tmp:
            tmp.write_bytes(b"new")
        assert kept.stat().st_mode & 0o777 == 0o604
    finally:
        os.umask(old)


def test_file_sha256_reads_in_chunks_and_matches_hashlib(tmp_path):
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 41 + b"tail"
    path.write_bytes(data)
    assert file_sha256(path) == file_sha256(path, chunk=7) == hashlib.sha256(data).hexdigest()
    assert file_sha256(path) != hashlib.sha256(data[:-1]).hexdigest()


def test_check_writable_accepts_new_files_and_folders_under_missing_folders(tmp_path):
    assert check_writable(tmp_path / "a" / "b" / "stats.json", "--stats") == \
        tmp_path / "a" / "b" / "stats.json"
    assert check_writable(tmp_path / "masks", "--save-masks", folder=True) == tmp_path / "masks"
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing behind, makes no folder


def test_check_writable_refuses_a_read_only_folder_naming_flag_and_path(tmp_path):
    with read_only_folder(tmp_path / "ro") as ro:
        with pytest.raises(InputError, match=r"^--stats .*ro/s\.json: cannot write in .*ro "):
            check_writable(ro / "s.json", "--stats")
        with pytest.raises(InputError, match=r"^--save-masks .*ro/m: cannot write in"):
            check_writable(ro / "m", "--save-masks", folder=True)


def test_check_writable_refuses_paths_under_a_file_and_the_wrong_kind(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match=r"f is a file, not a folder"):
        check_writable(tmp_path / "f" / "out.mp4", "--output")
    with pytest.raises(InputError, match=r"that is a folder; give a file name"):
        check_writable(tmp_path, "--stats")
    with pytest.raises(InputError, match=r"that is a file; give a folder"):
        check_writable(tmp_path / "f", "--save-masks", folder=True)


def _recorded_calls(monkeypatch, target):
    """Record, in order, the fsyncs (of the temporary file, of the folder) and the renames
    atomic_path makes. Recording only: the real os.fsync and os.replace still run."""
    import os

    calls, fsync, replace = [], os.fsync, os.replace
    folder = os.stat(target.parent)

    def recording_fsync(fd):
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):  # which folder: the target's
            calls.append(("fsync", "folder", (st.st_dev, st.st_ino) ==
                          (folder.st_dev, folder.st_ino)))
        else:  # which file: the one written, by its size
            calls.append(("fsync", "file", st.st_size))
        return fsync(fd)

    def recording_replace(src, dst):
        calls.append(("replace", Path(src).parent == Path(dst).parent, Path(dst) == target))
        return replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    return calls


def test_atomic_path_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path,
                                                                            monkeypatch):
    """The tests above see only the final file: without these fsyncs, or with the rename
    first, a power cut could leave an empty or missing file that they never notice."""
    target = tmp_path / "model.bin"
    calls = _recorded_calls(monkeypatch, target)
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"12345")
    assert calls == [("fsync", "file", 5),            # the data is on the disk ...
                     ("replace", True, True),         # ... before the name points at it,
                     ("fsync", "folder", True)]       # and the new name is on the disk too
    assert target.read_bytes() == b"12345"


def _write_in_a_limited_child(tmp_path, writer: str, limit: int):
    """``atomic_path`` in a child under RLIMIT_FSIZE=limit; its outcome as JSON."""
    import json
    import subprocess
    import sys

    from faults import limit_file_size

    code = f"""
import errno, json, sys
from fcn_edge.io import atomic_path
target = sys.argv[1]
try:
    with atomic_path(target) as tmp:
{writer}
    print(json.dumps({{"ok": True}}))
except OSError as exc:
    print(json.dumps({{"errno": errno.errorcode[exc.errno], "filename": exc.filename,
                      "strerror": exc.strerror}}))
"""
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out.bin")],
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=limit_file_size(limit))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("writer", [
    "        open(tmp, 'wb').write(b'x' * 100_000)",
    # torch's writer loses the errno (RuntimeError "unexpected pos"): atomic_path finds it
    "        import torch; torch.save({'w': torch.zeros(100_000)}, tmp)",
], ids=["python-write", "torch.save"])
def test_a_write_past_the_file_size_limit_is_efbig_naming_the_target(tmp_path, writer):
    (tmp_path / "out.bin").write_bytes(b"old")
    outcome = _write_in_a_limited_child(tmp_path, writer, 50_000)
    assert outcome == {"errno": "EFBIG", "filename": str(tmp_path / "out.bin"),
                       "strerror": "File too large"}
    assert (tmp_path / "out.bin").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temporary left


def test_a_write_onto_a_full_disk_is_enospc_naming_the_target(tmp_path):
    import torch

    from faults import small_filesystem

    with small_filesystem(tmp_path / "disk", "256k") as disk:
        (disk / "last.pt").write_bytes(b"old")
        with pytest.raises(OSError) as caught:
            with atomic_path(disk / "last.pt") as tmp:
                torch.save({"w": torch.zeros(200_000)}, tmp)  # 800 kB
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == \
            str(disk / "last.pt")
        assert (disk / "last.pt").read_bytes() == b"old"
        assert [p.name for p in disk.iterdir()] == ["last.pt"]



#: A write stopped by Ctrl-C whose clean-up gets a second interrupt at its AT-th line: raised
#: by a trace function, exactly where a signal handler's exception would land.
_TWICE = """
import sys
from pathlib import Path
from fcn_edge.io import atomic_path

at, lines = int(sys.argv[2]), 0

def trace(frame, event, arg):
    global lines
    if frame.f_code.co_filename.endswith("fcn_edge/io.py") and event == "line":
        lines += 1
        if lines == at:
            raise KeyboardInterrupt("second")
    return trace

with atomic_path(Path(sys.argv[1]) / "ckpt.pt") as tmp:
    tmp.write_bytes(b"half a checkpoint")
    sys.settrace(trace)
    raise KeyboardInterrupt("first")
"""


@pytest.mark.parametrize("at", range(1, 6))
def test_a_second_interrupt_during_the_clean_up_leaves_no_temporary(tmp_path, at):
    """Ctrl-C or SIGTERM twice (the CLI raises both as KeyboardInterrupt): the second lands in
    atomic_path's clean-up of the first, at any of its lines; by the time the process has
    exited, no temporary is left (and the old file, had there been one, is untouched)."""
    done = subprocess.run([sys.executable, "-c", _TWICE, str(tmp_path), str(at)],
                          capture_output=True, text=True, timeout=60)
    assert "KeyboardInterrupt" in done.stderr
    assert list(tmp_path.iterdir()) == []
