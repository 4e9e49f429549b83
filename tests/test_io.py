import hashlib

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
