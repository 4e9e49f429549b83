"""The pretrained zoo and its commands: entries whose facts match their sources, parameter
counts computed from our models equal to the published ones, and ``fcn-edge fetch`` against a
real HTTP server on 127.0.0.1 that the test starts, through an entry registered by the test.
No request leaves this machine."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fcn_edge.cli import main
from fcn_edge.data import VOC_CLASSES, voc_palette
from fcn_edge.errors import InputError
from fcn_edge.models import zoo
from fcn_edge.models.download import CACHE_ENV
from support_http import serve_file

DATA = os.urandom(200_000)  # a generated "weights file"
SHA = hashlib.sha256(DATA).hexdigest()
TORCHVISION = {"torchvision/fcn_resnet50": 35_322_218, "torchvision/fcn_resnet101": 54_314_346}


@pytest.fixture
def served_entry():
    """A zoo entry ``test/tiny`` whose URL is a local server serving ``DATA``; unregistered
    after the test."""
    with serve_file(DATA, f"tiny-{SHA[:8]}.pth") as server:
        entry = zoo.register(zoo.PretrainedEntry(
            name="test/tiny", architecture="test", build=lambda: None, classes=("a", "b"),
            palette=voc_palette, mean=(0.5,) * 3, std=(0.25,) * 3, color_order="bgr",
            input_size=(64, 96), url=server.url, sha256=SHA, licence="none",
            num_params=0, source="this test", loadable=False))  # fetch: the file as published
        try:
            yield server, entry
        finally:
            zoo.unregister("test/tiny")


def test_torchvision_entries_state_their_sources_facts():
    for name, published in TORCHVISION.items():
        entry = zoo.get(name)
        arch = name.split("/")[1]
        assert entry.url == f"https://download.pytorch.org/models/{arch}_coco-{entry.sha256}.pth"
        assert entry.sha256 == {"fcn_resnet50": "1167a1af", "fcn_resnet101": "7ecb50ca"}[arch]
        assert entry.num_params == published
        # torchvision's _VOC_CATEGORIES: our VOC classes but for the background's name
        assert entry.classes == ("__background__", *VOC_CLASSES[1:])
        assert np.array_equal(entry.palette_colors(), voc_palette(21))
        assert (entry.mean, entry.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        assert (entry.color_order, entry.input_size, entry.input_size_text) == (
            "rgb", 520, "short side 520")
        assert entry.loadable and "BSD-3-Clause" in entry.licence


@pytest.mark.parametrize("name", TORCHVISION)
def test_computed_parameters_equal_the_published_count(name):
    entry = zoo.get(name)
    assert entry.count_params() == entry.num_params == TORCHVISION[name]


def test_zoo_lists_every_entry_with_both_counts_and_cache_state(tmp_path, capsys):
    (tmp_path / "fcn_resnet101_coco-7ecb50ca.pth.part").write_bytes(b"x")
    assert main(["zoo", "--json", "--cache", str(tmp_path)]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(zoo.names()) >= set(TORCHVISION)
    for name, published in TORCHVISION.items():
        assert rows[name]["params"] == rows[name]["published_params"] == published
        assert len(rows[name]["classes"]) == 21 and rows[name]["licence"]
    assert rows["torchvision/fcn_resnet50"]["cached"] == "no"
    assert rows["torchvision/fcn_resnet101"]["cached"] == "partial"

    assert main(["zoo", "--cache", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "35,322,218" in table and "54,314,346" in table and "short side 520" in table


def test_fetch_downloads_verifies_and_prints_the_path(served_entry, tmp_path, capsys):
    server, entry = served_entry
    cache = tmp_path / "cache"
    assert main(["fetch", "test/tiny", "--cache", str(cache)]) == 0
    out, err = capsys.readouterr()
    path = cache / f"tiny-{SHA[:8]}.pth"
    assert out.strip() == str(path) and path.read_bytes() == DATA
    assert f"downloading {server.url}" in err
    assert sorted(p.name for p in cache.iterdir()) == [path.name]  # no .part left
    assert entry.cache_state(cache) == "yes"

    assert main(["fetch", "test/tiny", "--cache", str(cache)]) == 0  # verified: no request
    assert len(server.log) == 1


def test_fetch_uses_the_cache_env_var(served_entry, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env-cache"))
    assert main(["fetch", "test/tiny"]) == 0
    assert (tmp_path / "env-cache" / f"tiny-{SHA[:8]}.pth").read_bytes() == DATA


def test_fetch_with_a_wrong_hash_is_one_line_and_leaves_nothing(served_entry, tmp_path,
                                                                 capsys):
    server, entry = served_entry
    zoo.unregister("test/tiny")
    zoo.register(zoo.PretrainedEntry(**{**entry.__dict__, "sha256": "0123abcd"}))
    assert main(["fetch", "test/tiny", "--cache", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("fcn-edge fetch: ") and server.url in err and "0123abcd" in err
    assert list(tmp_path.iterdir()) == []


def test_fetch_of_an_unknown_name_lists_the_names(tmp_path, capsys):
    assert main(["fetch", "nobody/model", "--cache", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nobody/model'" in err
    assert all(name in err for name in TORCHVISION)
    assert list(tmp_path.iterdir()) == []


def test_fetch_into_an_unwritable_cache_is_refused_before_downloading(served_entry, tmp_path,
                                                                      capsys):
    server, _ = served_entry
    (tmp_path / "file").write_text("not a folder")
    assert main(["fetch", "test/tiny", "--cache", str(tmp_path / "file")]) == 1
    assert "--cache" in capsys.readouterr().err and server.log == []


def test_registry_refuses_duplicates_and_malformed_entries(served_entry):
    _, entry = served_entry
    with pytest.raises(InputError, match="already registered"):
        zoo.register(entry)
    for change in ({"sha256": "xyz"}, {"color_order": "hsv"}, {"name": "noslash"},
                   {"std": (0.0, 1.0, 1.0)}):
        with pytest.raises(InputError):
            zoo.PretrainedEntry(**{**entry.__dict__, **change})
    with pytest.raises(InputError, match="unknown pretrained model 'x/y'; choose one of"):
        zoo.get("x/y")


def test_listing_and_importing_the_zoo_download_nothing_and_need_no_torch():
    code = ("import sys, urllib.request as u\n"
            "u.urlopen = lambda *a, **k: sys.exit('a download was attempted')\n"
            "import fcn_edge.models.zoo, fcn_edge.cli as c\n"
            "for argv in (['--help'], ['zoo', '--help'], ['fetch', '--help']):\n"
            "    try:\n        c.main(argv)\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False"
    assert "zoo" in result.stdout and "fetch" in result.stdout and "--cache DIR" in result.stdout
