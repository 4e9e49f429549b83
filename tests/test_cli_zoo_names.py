"""A zoo name wherever a command takes a model (``fcn_edge/cli/model_arg.py``): ``export``,
``eval``, ``train --init-from``, ``run``, ``build``, each with ``--weights FILE`` for offline
boxes. The entries are registered by the test: a small fcn-edge FCN (ResNet18 FCN-32s) served
as a torchvision-style state dict by an HTTP server on 127.0.0.1, and a jetson-style archive of
an ONNX graph. The messages for bad names run the real CLI in a child process. No request
leaves this machine."""
from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import onnx
import pytest
import torch

from faults import run_cli
from fcn_edge.cli import main
from fcn_edge.data import voc_palette
from fcn_edge.models import create_model, zoo
from fcn_edge.models.archive import Archive
from fcn_edge.models.download import CACHE_ENV
from support import smooth_image, write_rgb
from support_http import serve_file
from support_onnx import coarse_model

TINY, JET = "test/tiny", "test/jet"
CLASSES = tuple(f"zoo{i}" for i in range(8))  # names no data set has: they come from the zoo
FOLDER = "Tiny-Jet-64x96"


def tiny_fcn(num_classes: int, aux: bool):
    """The test entry's architecture: a ResNet18 FCN-32s (small, unlike torchvision's)."""
    return create_model("fcn32s", num_classes=num_classes, backbone="resnet18")


def _state_bytes() -> bytes:
    torch.manual_seed(0)
    model = tiny_fcn(len(CLASSES), False)
    with torch.no_grad():  # score layers start at zero (§4.2): give labels something to vary
        for key, param in model.named_parameters():
            if key.startswith("score"):
                param.normal_(0, 0.05)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def _archive_bytes(tmp_path) -> bytes:
    """A .tar.gz as jetson-inference publishes: one folder, the ONNX and its class list."""
    onnx_path = tmp_path / "jet.onnx"
    onnx.save(coarse_model(classes=len(CLASSES)), str(onnx_path))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(onnx_path, f"{FOLDER}/fcn_resnet18.onnx")
        text = ("\n".join(CLASSES) + "\n").encode()
        info = tarfile.TarInfo(f"{FOLDER}/classes.txt")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    return buffer.getvalue()


STATE = _state_bytes()
SHA = hashlib.sha256(STATE).hexdigest()


def _entry(name: str, url: str, **facts) -> zoo.PretrainedEntry:
    return zoo.PretrainedEntry(
        name=name, architecture="test FCN-32s ResNet18", build=tiny_fcn, classes=CLASSES,
        palette=voc_palette, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
        color_order="rgb", input_size=(64, 96), url=url, licence="none", source="this test",
        aux=False, **facts)


def _closed_url(name: str) -> str:
    """A URL on 127.0.0.1 where nothing listens: a box without network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/weights/{name}"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache, and the current folder a fresh one (export writes runs/export/...)."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cache"


@pytest.fixture
def served(cache):
    """``test/tiny`` published on a server on 127.0.0.1 (its log lists the requests)."""
    with serve_file(STATE, f"tiny-{SHA[:8]}.pth") as server:
        zoo.register(_entry(TINY, server.url, sha256=SHA))
        try:
            yield server
        finally:
            zoo.unregister(TINY)


@pytest.fixture
def offline(cache, tmp_path):
    """``test/tiny`` (published hash) and ``test/jet`` (an archive; none published) whose
    servers are unreachable, and their files, as a user would have copied them by hand."""
    weights, archive = tmp_path / "tiny.pth", tmp_path / f"{FOLDER}.tar.gz"
    weights.write_bytes(STATE)
    archive.write_bytes(_archive_bytes(tmp_path))
    zoo.register(_entry(TINY, _closed_url(f"tiny-{SHA[:8]}.pth"), sha256=SHA))
    zoo.register(_entry(JET, _closed_url(archive.name),
                        archive=Archive(file=archive.name, folder=FOLDER)))
    try:
        yield weights, archive
    finally:
        zoo.unregister(TINY)
        zoo.unregister(JET)


def _meta(path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_export_a_zoo_name_downloads_once_and_writes_its_classes(served, capsys):
    args = ["export", TINY, "--parity-sizes", "64x64", "--no-simplify"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "downloading" in out and served.url in out  # announced, not silent
    written = sorted(Path("runs/export/test/tiny").glob("*.onnx"))  # not into the cache
    assert [p.name for p in written] == ["tiny.onnx"]
    assert tuple(json.loads(_meta(written[0])["classes"])) == CLASSES
    assert main(args) == 0  # the second time from the cache: no request
    assert len(served.log) == 1


def test_offline_without_weights_is_one_line_naming_the_flag(offline, capsys):
    assert main(["export", TINY]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--weights FILE" in err[0] and "cannot connect" in err[0], err
    assert not (offline[0].parent / "runs").exists()  # nothing written


def test_offline_weights_give_export_eval_and_run_the_file(offline, tmp_path, capsys):
    weights, _ = offline
    assert main(["export", TINY, "--weights", str(weights), "-o", "out",
                 "--parity-sizes", "64x64", "--no-simplify"]) == 0
    assert _meta(next((tmp_path / "out").glob("*.onnx")))  # written, self-describing
    assert main(["eval", TINY, "--weights", str(weights), "--num-images", "2",
                 "--image-size", "64x64"]) == 0
    assert "mean IU" in capsys.readouterr().out
    images = tmp_path / "images"
    images.mkdir()
    write_rgb(images / "a.png", smooth_image(0, 48, 80))
    assert main(["run", str(images), "--model", TINY, "--weights", str(weights),
                 "--save-masks", "masks"]) == 0
    mask = cv2.imread(str(tmp_path / "masks" / "a.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape[:2] == (48, 80)


def test_train_init_from_a_zoo_name(offline, capsys):
    weights, _ = offline
    assert main(["train", "--init-from", TINY, "--weights", str(weights), "--model", "fcn32s",
                 "--backbone", "resnet18", "--epochs", "1", "--max-steps", "0",
                 "--num-images", "2", "--val-images", "2", "--image-size", "64x64",
                 "--out", "trained", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"initialised from {zoo.get(TINY).prepared_path()}" in out, out


def test_an_archive_entry_is_an_exported_model(offline, tmp_path, capsys):
    """jetson-style: its file is a self-describing ONNX — run and build take it; export, eval
    and train, which need a PyTorch checkpoint, say so in one line."""
    _, archive = offline
    assert main(["build", JET, "--weights", str(archive), "--check-only"]) == 0
    images = tmp_path / "images"
    images.mkdir()
    write_rgb(images / "a.png", smooth_image(0, 64, 96))
    assert main(["run", str(images), "--model", JET, "--weights", str(archive),
                 "--save-masks", "masks"]) == 0
    capsys.readouterr()
    for command in ("export", "eval"):  # no --weights, no server: refused before a download
        assert main([command, JET]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "test/jet is already an exported model" in err[0] and \
            "fcn-edge run, bench and build take it" in err[0], err


def test_build_refuses_a_checkpoint_entry(offline, capsys):
    assert main(["build", TINY, "--weights", str(offline[0]), "--check-only"]) == 1
    err = capsys.readouterr().err
    assert "test/tiny is a PyTorch checkpoint" in err and "fcn-edge export test/tiny" in err


def test_run_takes_a_zoo_name_where_the_source_goes(offline, capsys):
    """``fcn-edge run NAME --camera N``: the name is the model (camera 9 is not there)."""
    assert main(["run", TINY, "--weights", str(offline[0]), "--camera", "9",
                 "--reconnect-timeout", "0"]) == 1
    err = capsys.readouterr().err
    assert "camera" in err and "test/tiny" not in err, err
    assert zoo.get(TINY).prepared_path().is_file()


@pytest.mark.parametrize("args, message", [
    (["export", "torchvision/fcn_resnet5"],
     "fcn-edge export: torchvision/fcn_resnet5: no such file, and not a zoo name "
     "(one of torchvision/fcn_resnet50, "),
    (["run", "--model", "nowhere", "--camera", "0"],
     "fcn-edge run: --model nowhere: no such file, and not a zoo name (one of "),
    (["export", "{ckpt}", "--weights", "{ckpt}"],
     "fcn-edge export: --weights {ckpt}: give the zoo name this file belongs to as the "
     "checkpoint"),
    (["export", "torchvision/fcn_resnet50", "--weights", "missing.pth"],
     "fcn-edge export: --weights missing.pth: no such file"),
])
def test_bad_names_are_one_line(args, message, tmp_path):
    ckpt = tmp_path / "mine.pt"
    ckpt.write_bytes(b"not read")
    done = run_cli([a.format(ckpt=ckpt) for a in args], cwd=tmp_path)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(message.format(ckpt=ckpt)), done.stderr
    if "not a zoo name" in message:
        assert "a local model path must exist" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_run_resolves_an_onnx_entry_without_torch(offline, tmp_path):
    """On a runtime-only box: `fcn-edge run --model NAME` for an entry whose file is an ONNX
    (the archive unpacked and imported) never imports torch (a child process, which registers
    the test's entry first)."""
    _, archive = offline
    images = tmp_path / "images"
    images.mkdir()
    write_rgb(images / "a.png", smooth_image(0, 64, 96))
    script = f"""
import sys
from fcn_edge.models import zoo
from fcn_edge.models.archive import Archive
from fcn_edge.cli import main
zoo.register(zoo.PretrainedEntry(
    name={JET!r}, architecture="test", build="fcn_edge.models:create_model", classes={CLASSES!r},
    palette="fcn_edge.runtime.palette:voc_palette", mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225), color_order="rgb", input_size=(64, 96),
    url={zoo.get(JET).url!r}, licence="none", source="this test", aux=False,
    archive=Archive(file={archive.name!r}, folder={FOLDER!r})))
code = main(["run", {str(images)!r}, "--model", {JET!r}, "--weights", {str(archive)!r},
             "--save-masks", "masks"])
assert "torch" not in sys.modules, "torch was imported"
sys.exit(code)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)  # the cache: $FCN_EDGE_CACHE, set above
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "masks" / "a.png").is_file()
