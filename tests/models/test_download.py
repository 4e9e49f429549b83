"""The downloader against a real HTTP server on 127.0.0.1 that each test starts: a generated
file of a few hundred KB, served whole, in ranges, cut halfway, stalled, or not at all. No
request leaves this machine."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fcn_edge.errors import FcnEdgeError, InputError, ModelFormatError
from fcn_edge.models.download import CACHE_ENV, cache_dir, download
from support_http import serve_file

DATA = os.urandom(300_000)  # a "weights file": random, so a wrong byte anywhere changes the hash
SHA = hashlib.sha256(DATA).hexdigest()
CUT = 120_000  # where "cut" and "stall" stop sending


@pytest.fixture
def server():
    with serve_file(DATA, f"fcn_test-{SHA[:8]}.pth", cut=CUT) as httpd:
        yield httpd


def fetch(server, dest, **kwargs) -> Path:
    kwargs.setdefault("sha256", SHA)
    return download(server.url, dest=dest, progress=False, log=lambda line: None, timeout=1.0,
                    **kwargs)


def test_good_file_is_written_whole_and_verified(server, tmp_path):
    path = fetch(server, tmp_path / "w.pth")
    assert path == tmp_path / "w.pth" and path.read_bytes() == DATA
    assert server.log == [{"range": None, "sent": len(DATA)}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]  # no .part left behind


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    server.mode = "cut"  # the server promises 300 000 bytes and closes after 120 000
    with pytest.raises(FcnEdgeError, match=f"stopped after {CUT} of {len(DATA)} bytes .*run "
                                           f"again to resume"):
        fetch(server, tmp_path / "w.pth")
    assert not (tmp_path / "w.pth").exists()
    assert (tmp_path / "w.pth.part").read_bytes() == DATA[:CUT]

    server.mode = "range"
    assert fetch(server, tmp_path / "w.pth").read_bytes() == DATA
    assert server.log[1] == {"range": f"bytes={CUT}-", "sent": len(DATA) - CUT}  # only the rest
    assert not (tmp_path / "w.pth.part").exists()


def test_a_server_ignoring_range_starts_over(server, tmp_path):
    server.mode = "cut"
    with pytest.raises(FcnEdgeError, match="stopped after"):
        fetch(server, tmp_path / "w.pth")
    server.mode = "ignore-range"  # answers 200 with the whole file: it must not be appended
    lines: list[str] = []
    path = download(server.url, SHA, tmp_path / "w.pth", progress=False, log=lines.append)
    assert path.read_bytes() == DATA
    assert server.log[1] == {"range": f"bytes={CUT}-", "sent": len(DATA)}
    assert any("ignores Range" in line and "starting over" in line for line in lines)


def test_a_part_as_long_as_the_file_is_fetched_again_after_416(server, tmp_path):
    (tmp_path / "w.pth.part").write_bytes(b"x" * len(DATA))  # stale, and the server has no more
    assert fetch(server, tmp_path / "w.pth").read_bytes() == DATA
    assert [entry["range"] for entry in server.log] == [f"bytes={len(DATA)}-", None]


def test_wrong_hash_removes_the_download_and_says_both_hashes(server, tmp_path):
    wrong = hashlib.sha256(b"another file").hexdigest()
    with pytest.raises(ModelFormatError) as caught:
        fetch(server, tmp_path / "w.pth", sha256=wrong)
    message = str(caught.value)
    assert "\n" not in message and server.url in message
    assert f"SHA-256 {SHA}, expected {wrong}" in message and "run again" in message
    assert list(tmp_path.iterdir()) == []  # neither the target nor the part


def test_a_published_hash_prefix_is_accepted(server, tmp_path):
    assert fetch(server, tmp_path / "w.pth", sha256=SHA[:8].upper()).read_bytes() == DATA
    with pytest.raises(InputError, match="64 hex digits"):
        fetch(server, tmp_path / "x.pth", sha256="1234")
    with pytest.raises(InputError, match="64 hex digits"):
        fetch(server, tmp_path / "x.pth", sha256="not-a-hash-at-all")
    assert len(server.log) == 1  # a malformed hash is refused before any request


def test_404_is_one_line_naming_url_and_status(server, tmp_path):
    server.mode = "404"
    with pytest.raises(FcnEdgeError) as caught:
        fetch(server, tmp_path / "w.pth")
    message = str(caught.value)
    assert "\n" not in message and server.url in message and "HTTP 404" in message
    assert "pass the file you downloaded yourself" in message
    assert list(tmp_path.iterdir()) == []


def test_refused_connection_is_one_line(tmp_path):
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/w.pth"
    with pytest.raises(FcnEdgeError, match=r"cannot connect \(.*refused.*\).*pass the file"):
        download(url, SHA, tmp_path / "w.pth", progress=False, log=lambda line: None)
    assert list(tmp_path.iterdir()) == []


def test_a_server_that_never_answers_times_out(tmp_path):
    with socket.socket() as silent:  # accepts connections (the backlog) and never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/w.pth"
        started = time.monotonic()
        with pytest.raises(FcnEdgeError, match=r"no answer within 0.5 s"):
            download(url, SHA, tmp_path / "w.pth", progress=False, log=lambda line: None,
                     timeout=0.5)
    assert time.monotonic() - started < 5


def test_a_stall_mid_body_keeps_the_part_for_resuming(server, tmp_path):
    server.mode = "stall"
    with pytest.raises(FcnEdgeError, match=f"stopped after {CUT} of {len(DATA)} bytes "
                                           r"\(no data within the timeout\)"):
        fetch(server, tmp_path / "w.pth")
    assert (tmp_path / "w.pth.part").stat().st_size == CUT


def test_a_verified_file_is_not_downloaded_again(server, tmp_path):
    fetch(server, tmp_path / "w.pth")
    assert fetch(server, tmp_path / "w.pth").read_bytes() == DATA
    assert len(server.log) == 1  # the second call made no request
    (tmp_path / "w.pth").write_bytes(DATA[:-1])  # damaged since: fetched again
    assert fetch(server, tmp_path / "w.pth").read_bytes() == DATA
    assert len(server.log) == 2


def test_cache_dir_follows_env_vars(monkeypatch, tmp_path, server):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "fcn-edge"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "fcn-edge"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    path = fetch(server, None)  # no dest: the cache, under the URL's file name
    assert path == tmp_path / "mine" / f"fcn_test-{SHA[:8]}.pth" and path.read_bytes() == DATA


def test_progress_is_a_tqdm_bar_or_log_lines(server, tmp_path, monkeypatch, capsys):
    download(server.url, SHA, tmp_path / "a.pth", log=lambda line: None, timeout=1.0)
    assert "a.pth: 100%" in capsys.readouterr().err  # tqdm's bar, on stderr
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as without the train extra
    lines: list[str] = []
    download(server.url, SHA, tmp_path / "b.pth", log=lines.append, timeout=1.0)
    assert lines[0].startswith(f"downloading {server.url}")
    assert lines[-1] == f"  {len(DATA)} bytes of {len(DATA)} (100 %)"
    percents = [int(line.split("(")[1].split(" ")[0]) for line in lines[1:]]
    assert len(percents) >= 3 and percents == sorted(set(percents))  # a line per tenth or so


def test_import_downloads_nothing_and_needs_no_torch():
    code = ("import sys, fcn_edge.models.download as d; "
            "assert 'torch' not in sys.modules and 'tqdm' not in sys.modules; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
