"""jetson-inference's FCN-ResNet18 family in the zoo: ``fcn-edge fetch`` downloads an archive
in jetson-inference's exact layout from an HTTP server on 127.0.0.1 that this test starts,
trusts its hash on first use, unpacks it safely and makes its coarse-grid ONNX (exported here by
plain ``torch.onnx.export`` from ``fcn_resnet18``, as pytorch-segmentation's onnx_export.py
does) self-describing, so Segmenter runs it. No request leaves this machine."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fcn_edge.cli import main
from fcn_edge.models import zoo
from fcn_edge.models.pretrained_data import DEEPSCENE_COLORS
from fcn_edge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from fcn_edge.runtime.segmenter import Segmenter
from support_http import serve_file

pytestmark = pytest.mark.usefixtures("one_thread")

REAL = "jetson/fcn-resnet18-deepscene-576x320"
NAME = "jetson/test-deepscene"
FOLDER = "FCN-ResNet18-DeepScene-576x320"
CLASSES = ("trail", "grass", "vegetation", "obstacle", "sky")
#: blank lines, extra whitespace, segNet's optional alpha; one colour short (sky: the fallback)
COLORS_TXT = "170 170 170\n\n  0   255  0  \n102 102 51 255\n0 0 0\n\n"
SIZE = (64, 128)  # the fixed input (height, width); small, so the test stays fast


class CoarseScores(torch.nn.Module):
    """What onnx_export.py exports: the classifier's grid at stride 32, not upsampled."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.scores(x)


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """(model, path of its ONNX): fcn_resnet18 for 5 classes, input_0 → output_0, fixed size."""
    from fcn_edge.models.torchvision_fcn import fcn_resnet18

    torch.manual_seed(0)
    model = fcn_resnet18(num_classes=len(CLASSES), aux=False).eval()
    path = tmp_path_factory.mktemp("jetson") / "fcn_resnet18.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(CoarseScores(model).eval(), (torch.ones(1, 3, *SIZE),), str(path),
                          dynamo=False, input_names=["input_0"], output_names=["output_0"])
    return model, path


def make_archive(onnx_path, colors: str = COLORS_TXT, extra=()) -> bytes:
    """A .tar.gz as jetson-inference publishes: one folder with the model and label files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        folder = tarfile.TarInfo(FOLDER)
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        if onnx_path is not None:
            tar.add(onnx_path, f"{FOLDER}/fcn_resnet18.onnx")
        else:  # refused before the model is read: a placeholder keeps the test fast
            _add_text(tar, f"{FOLDER}/fcn_resnet18.onnx", "not read")
        for name, text in (("classes.txt", "\n".join(CLASSES) + "\n\n"),
                           ("colors.txt", colors)):
            _add_text(tar, f"{FOLDER}/{name}", text)
        for member in extra:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return buffer.getvalue()


def _add_text(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def archive(network) -> bytes:
    return make_archive(network[1])


@pytest.fixture
def served(archive):
    """The entry ``NAME``: the real DeepScene entry's facts, its URL a local server's."""
    with serve_file(archive, "jm0zlezvweiimpzluohg6453s0u0nvcv.gz") as server:
        entry = zoo.register(zoo.PretrainedEntry(
            **{**zoo.get(REAL).__dict__, "name": NAME, "url": server.url}))
        try:
            yield server, entry
        finally:
            zoo.unregister(NAME)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_fetch_unpacks_and_imports_an_onnx_that_segments_frames(served, network, archive,
                                                                   tmp_path, capsys):
    server, entry = served
    cache = tmp_path / "cache"
    assert main(["fetch", NAME, "--cache", str(cache)]) == 0
    out, err = capsys.readouterr()
    path = cache / "jetson" / FOLDER / "fcn_resnet18.fcn-edge.onnx"
    assert out.strip() == str(path) and path == entry.prepared_path(cache)
    assert f"downloading {server.url} ({NAME})" in err
    assert "publishes no SHA-256" in err and sha(archive) in err
    record = cache / "jetson" / f"{FOLDER}.tar.gz.sha256"
    assert record.read_text() == f"{sha(archive)}  {FOLDER}.tar.gz\n"
    assert "colors.txt has 4 colours for 5 classes" in err

    frame = np.random.default_rng(0).integers(0, 256, (90, 150, 3), np.uint8)
    with OnnxRuntimeBackend(path) as backend, Segmenter(backend) as seg:
        meta = backend.meta
        assert seg(frame).shape == (90, 150)
        native = np.random.default_rng(1).integers(0, 256, (*SIZE, 3), np.uint8)
        labels = seg(native)
    assert meta.classes == CLASSES and meta.color_order == "rgb"
    assert meta.palette == ((170, 170, 170), (0, 255, 0), (102, 102, 51), (0, 0, 0),
                            DEEPSCENE_COLORS[4])
    assert meta.export_options["zoo"] == NAME
    assert meta.export_options["archive_sha256"] == sha(archive)
    # the labels are the argmax of the coarse scores upsampled bilinearly, as segNet shows them
    model = network[0]
    x = (native[..., ::-1] / 255.0 - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
    x = torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32))
    with torch.no_grad():
        want = F.interpolate(model.scores(x), size=SIZE, mode="bilinear").argmax(1)[0].numpy()
    assert (labels == want).mean() > 0.999

    mtime = path.stat().st_mtime_ns
    assert main(["fetch", NAME, "--cache", str(cache)]) == 0  # verified and reused
    assert len(server.log) == 1 and path.stat().st_mtime_ns == mtime


def test_a_file_changed_at_its_source_is_refused_naming_both_hashes(served, network, archive,
                                                                      tmp_path, capsys):
    server, entry = served
    cache = tmp_path / "cache"
    assert main(["fetch", NAME, "--cache", str(cache)]) == 0
    entry.cached_path(cache).unlink()  # the archive is gone; its recorded hash stays
    changed = make_archive(network[1], colors="1 2 3\n4 5 6\n7 8 9\n10 11 12\n13 14 15\n")
    server.data = changed
    capsys.readouterr()
    assert main(["fetch", NAME, "--cache", str(cache)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert sha(changed) in err and sha(archive) in err and "changed at its source" in err
    assert f"--sha256 {sha(changed)}" in err
    assert not entry.cached_path(cache).exists()
    assert not any(p.name.endswith(".part") for p in cache.rglob("*"))

    # trusting the new file on purpose: pinned, recorded, unpacked and imported again
    assert main(["fetch", NAME, "--cache", str(cache), "--sha256", sha(changed)]) == 0
    path = capsys.readouterr().out.strip()
    with OnnxRuntimeBackend(path) as backend:
        assert backend.meta.palette[:2] == ((1, 2, 3), (4, 5, 6))
    assert (cache / "jetson" / f"{FOLDER}.tar.gz.sha256").read_text().split()[0] == sha(changed)


def test_a_wrong_sha256_pin_is_refused_and_leaves_nothing(served, archive, tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    assert main(["fetch", NAME, "--cache", str(cache), "--sha256", "0" * 64]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert sha(archive) in err and "0" * 64 in err and "--sha256" in err
    assert files(cache) == []


def test_offline_weights_archive_is_checked_against_the_record(network, archive, tmp_path,
                                                               capsys):
    local = tmp_path / f"{FOLDER}.tar.gz"
    local.write_bytes(archive)
    cache = tmp_path / "cache"
    assert main(["fetch", REAL, "--weights", str(local), "--cache", str(cache)]) == 0
    path = capsys.readouterr().out.strip()
    assert path == str(zoo.get(REAL).prepared_path(cache))
    assert not (cache / "jetson" / f"{FOLDER}.tar.gz").exists()  # the user's file is not copied

    other = tmp_path / "other.tar.gz"
    other.write_bytes(make_archive(network[1], colors="9 9 9\n"))
    before = files(cache)
    assert main(["fetch", REAL, "--weights", str(other), "--cache", str(cache)]) == 1
    err = capsys.readouterr().err
    assert sha(other.read_bytes()) in err and sha(archive) in err and "--weights" in err
    assert files(cache) == before


def test_an_unpacked_folder_stands_in_for_the_archive(archive, tmp_path, capsys):
    """jetson-inference's download script deletes each archive once unpacked: its folder is
    taken as it is (no hash to check, nothing recorded, nothing written into it)."""
    networks = tmp_path / "networks"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(networks, filter="data")
    folder, cache = networks / FOLDER, tmp_path / "cache"
    before = files(networks)
    assert main(["fetch", REAL, "--weights", str(folder), "--cache", str(cache)]) == 0
    out, err = capsys.readouterr()
    path = zoo.get(REAL).prepared_path(cache)
    assert out.strip() == str(path) and "an unpacked folder, used as it is" in err
    assert files(networks) == before and files(cache) == [
        "jetson", f"jetson/{FOLDER}", f"jetson/{FOLDER}/fcn_resnet18.fcn-edge.onnx"]
    with OnnxRuntimeBackend(path) as backend:
        assert backend.meta.classes == CLASSES
        assert "archive_sha256" not in backend.meta.export_options
    mtime = path.stat().st_mtime_ns
    assert main(["fetch", REAL, "--weights", str(folder), "--cache", str(cache)]) == 0
    assert path.stat().st_mtime_ns == mtime  # the same graph: reused

    assert main(["fetch", REAL, "--weights", str(folder), "--sha256", "0" * 64,
                 "--cache", str(cache)]) == 1
    assert "is a folder, which has no such hash" in capsys.readouterr().err


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize("member, why", [
    (_member(f"{FOLDER}/../evil"), "'..'"),
    (_member("/tmp/fcn-edge-evil"), "absolute"),
    (_member(f"{FOLDER}/link", tarfile.SYMTYPE, "../../evil"), "outside"),
    (_member(f"{FOLDER}/hard", tarfile.LNKTYPE, "/etc/passwd"), "outside"),
    (_member(f"{FOLDER}/dev", tarfile.CHRTYPE), "device"),
], ids=["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_an_archive_that_writes_outside_its_folder_is_refused(member, why, tmp_path, capsys):
    local = tmp_path / "evil.tar.gz"
    local.write_bytes(make_archive(None, extra=[member]))
    cache = tmp_path / "deep" / "cache"
    assert main(["fetch", REAL, "--weights", str(local), "--cache", str(cache)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert repr(member.name) in err and why in err and "nothing was extracted" in err
    assert not (cache / "jetson" / FOLDER).exists()
    assert not (tmp_path / "deep" / "evil").exists() and not (cache / "evil").exists()
    assert not (cache / "jetson" / f"{FOLDER}.tar.gz.sha256").exists()  # never trusted


def test_a_truncated_archive_is_one_line_and_not_kept(served, archive, tmp_path, capsys):
    server, entry = served
    server.data = archive[:len(archive) // 2]  # the server sends a whole, truncated file
    cache = tmp_path / "cache"
    assert main(["fetch", NAME, "--cache", str(cache)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "not a whole .tar.gz archive" in err and "fetch it again" in err
    assert not entry.cached_path(cache).exists()  # removed, so the next fetch downloads it
    assert not (cache / "jetson" / FOLDER).exists()
    assert not (cache / "jetson" / f"{FOLDER}.tar.gz.sha256").exists()
    assert [p.name for p in (cache / "jetson").iterdir()] == []


def test_the_jetson_entries_state_their_sources_facts(capsys):
    jetson = [e for e in zoo.entries() if e.name.startswith("jetson/")]
    assert len(jetson) == 11
    entry = zoo.get("jetson/fcn-resnet18-cityscapes-512x256")
    assert entry.url == "https://nvidia.box.com/shared/static/k7s7gdgi098309fndm2xbssj553vf71s.gz"
    assert entry.archive.file == "FCN-ResNet18-Cityscapes-512x256.tar.gz"
    assert entry.archive.folder == "FCN-ResNet18-Cityscapes-512x256"
    assert (entry.archive.model, entry.archive.labels, entry.archive.colors) == (
        "fcn_resnet18.onnx", "classes.txt", "colors.txt")
    assert entry.input_size == (256, 512) and len(entry.classes) == 21
    assert entry.classes[:4] == ("void", "ego_vehicle", "ground", "road")
    for e in jetson:
        assert e.sha256 is None and e.num_params is None and "MIT" in e.licence
        assert (e.mean, e.std, e.color_order) == ((0.485, 0.456, 0.406),
                                                  (0.229, 0.224, 0.225), "rgb")
        assert len(e.palette_colors()) == len(e.classes) in (5, 21)
    deepscene = zoo.get(REAL)
    assert deepscene.classes == CLASSES and deepscene.input_size == (320, 576)
    assert [tuple(c) for c in deepscene.palette_colors()] == list(DEEPSCENE_COLORS)

    assert main(["zoo", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[REAL]["sha256"] is None and rows[REAL]["published_params"] is None
    assert rows[REAL]["params"] == deepscene.count_params() > 11_000_000
    assert main(["zoo"]) == 0
    table = capsys.readouterr().out
    assert "not published" in table and "none published" in table and REAL in table


def test_is_zoo_name_is_a_registered_name_that_is_no_path(tmp_path, monkeypatch):
    assert zoo.is_zoo_name(REAL) and zoo.is_zoo_name("torchvision/fcn_resnet50")
    assert not zoo.is_zoo_name("jetson/nothing") and not zoo.is_zoo_name("model.onnx")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "jetson").mkdir()
    (tmp_path / REAL).write_text("a local file of that name")
    assert not zoo.is_zoo_name(REAL)
