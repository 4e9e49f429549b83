"""The paper's own Caffe FCN-32s/16s/8s as pytorch-fcn converted them: zoo entries with the
facts pytorch-fcn publishes (Google Drive URL, MD5, file name, BGR mean pixel, its class
names), verified by MD5, refused in one line when Google Drive answers with its confirmation
page, and prepared into an fcn-edge checkpoint in the ``reference`` layout.

The weights are generated here in pytorch-fcn's exact layout (``torchfcn/models/fcn8s.py``:
Caffe's layer names, C×C×k×k ConvTranspose kernels, no upsampling bias), with fc6/fc7 16 wide
instead of 4096 so that a file is 59 MB, not 540; the test entry's build narrows them alike.
Served by a real HTTP server on 127.0.0.1; no request leaves this machine."""
from __future__ import annotations

import hashlib
from contextlib import ExitStack
from functools import partial

import numpy as np
import pytest
import torch

from fcn_edge.cli import main
from fcn_edge.errors import FcnEdgeError, InputError, ModelFormatError
from fcn_edge.export.zoo_prepare import prepare
from fcn_edge.models import load_model, zoo
from fcn_edge.models.download import download
from fcn_edge.models.pretrained_data import CAFFE_MEAN_BGR
from fcn_edge.runtime.palette import voc_palette
from support_http import serve_file

pytestmark = pytest.mark.usefixtures("one_thread")

NAME = "test/pytorch-fcn8s"
FC = 16  # fc6/fc7 width of the generated files (pytorch-fcn's are 4096)
PUBLISHED = {  # torchfcn/models/fcn*s.py @ 4b988509bfd1: url, md5, pretrained_model's name
    "fcn32s": ("https://drive.google.com/uc?id=11k2Q0bvRQgQbT6-jYWeh6nmAsWlSCY3f",
               "d3eb467a80e7da0468a20dfcbc13e6c8", "fcn32s_from_caffe.pth"),
    "fcn16s": ("http://drive.google.com/uc?id=1bctu58B6YH9bu6lBBSBB2rUeGlGhYLoP",
               "a2d4035f669f09483b39c9a14a0d6670", "fcn16s_from_caffe.pth"),
    "fcn8s": ("http://drive.google.com/uc?id=1ieXWyoG68xqoHJPWdyrDyaIaaWlfmUxI",
              "de93e540ec79512f8770033849c8ae89", "fcn8s_from_caffe.pth"),
}
GOOGLE_PAGE = (b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>"
               b"</head><body>Google Drive can't scan this file for viruses.</body></html>")


def pytorch_fcn_state(variant: str, n_class: int = 21, seed: int = 0) -> dict:
    """A state dict with the keys and shapes of pytorch-fcn's ``FCN32s/16s/8s(n_class)``
    (``nn.Conv2d(in, out, k)`` weights and biases, ``nn.ConvTranspose2d(n, n, k, bias=False)``
    filled as its ``get_upsampling_weight``: bilinear on the diagonal), random values."""
    gen = torch.Generator().manual_seed(seed)
    convs = [("conv1_1", 3, 64, 3), ("conv1_2", 64, 64, 3), ("conv2_1", 64, 128, 3),
             ("conv2_2", 128, 128, 3), ("conv3_1", 128, 256, 3), ("conv3_2", 256, 256, 3),
             ("conv3_3", 256, 256, 3), ("conv4_1", 256, 512, 3), ("conv4_2", 512, 512, 3),
             ("conv4_3", 512, 512, 3), ("conv5_1", 512, 512, 3), ("conv5_2", 512, 512, 3),
             ("conv5_3", 512, 512, 3), ("fc6", 512, FC, 7), ("fc7", FC, FC, 1),
             ("score_fr", FC, n_class, 1)]
    skips = {"fcn32s": [], "fcn16s": [("score_pool4", 512, n_class, 1)],
             "fcn8s": [("score_pool3", 256, n_class, 1), ("score_pool4", 512, n_class, 1)]}
    upscores = {"fcn32s": [("upscore", 64)], "fcn16s": [("upscore2", 4), ("upscore16", 32)],
                "fcn8s": [("upscore2", 4), ("upscore8", 16), ("upscore_pool4", 4)]}
    state = {}
    for name, c_in, c_out, k in convs + skips[variant]:
        state[f"{name}.weight"] = torch.randn(c_out, c_in, k, k, generator=gen) * (
            2 / (c_in * k * k)) ** 0.5
        state[f"{name}.bias"] = torch.randn(c_out, generator=gen) * 0.1
    for name, k in upscores[variant]:
        weight = torch.zeros(n_class, n_class, k, k)
        weight[range(n_class), range(n_class)] = bilinear(k)
        state[f"{name}.weight"] = weight
    return state


def bilinear(k: int) -> torch.Tensor:
    """pytorch-fcn's (and fcn.berkeleyvision.org surgery.py's) upsampling filter."""
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    og = np.ogrid[:k, :k]
    return torch.from_numpy((1 - abs(og[0] - center) / factor) *
                            (1 - abs(og[1] - center) / factor)).float()


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """(path, md5, state) of a generated fcn8s_from_caffe.pth, once per module."""
    state = pytorch_fcn_state("fcn8s")
    path = tmp_path_factory.mktemp("pytorch-fcn") / "fcn8s_from_caffe.pth"
    torch.save(state, path)
    return path, hashlib.md5(path.read_bytes()).hexdigest(), state


def register(md5: str, url: str = "http://127.0.0.1:9/uc?id=test") -> zoo.PretrainedEntry:
    """``NAME``: the real pytorch-fcn/fcn8s entry's facts with ``md5`` and ``url``, its build
    16 wide like the generated files."""
    return zoo.register(zoo.PretrainedEntry(**{
        **zoo.get("pytorch-fcn/fcn8s").__dict__, "name": NAME, "md5": md5, "url": url,
        "build": partial(zoo.released_fcn, "fcn8s", fc_channels=FC)}))


@pytest.fixture
def entry(released):
    """``NAME`` with the generated file's MD5 and a URL nothing answers (--weights only)."""
    yield register(released[1])
    zoo.unregister(NAME)


@pytest.fixture
def serve(released):
    """``serve(body, content_type)``: ``NAME``, with the generated file's MD5, downloading
    ``body`` from a local server (Google Drive's ``uc?id=`` URL shape)."""
    with ExitStack() as stack:
        def start(body: bytes, content_type: str | None = None):
            server = stack.enter_context(serve_file(body, "uc?id=test"))
            server.content_type = content_type
            register(released[1], server.url)
            stack.callback(zoo.unregister, NAME)
            return server
        yield start


def damaged(data: bytes) -> bytes:
    """``data`` with its last byte changed."""
    return data[:-1] + bytes([data[-1] ^ 1])


def files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_the_entries_state_pytorch_fcns_published_facts():
    for variant, (url, md5, file) in PUBLISHED.items():
        entry = zoo.get(f"pytorch-fcn/{variant}")
        assert (entry.url, entry.md5, entry.sha256, entry.file_name) == (url, md5, None, file)
        assert entry.hash_text == f"md5 {md5}" and entry.published_hash == f"md5:{md5}"
        assert entry.cached_path("/c").as_posix() == f"/c/{file}"
        assert entry.prepared_path("/c").as_posix() == f"/c/pytorch-fcn/{variant}.pt"
        assert entry.architecture == "FCN-VGG16 reference layout (Caffe, pad 100)"
        assert entry.classes[0] == "background" and len(entry.classes) == 21
        assert entry.classes[16] == "potted plant" and entry.classes[20] == "tv/monitor"
        assert np.array_equal(entry.palette_colors(), voc_palette(21))
        assert entry.color_order == "bgr" and entry.std == (1 / 255,) * 3
        assert np.allclose(np.array(entry.mean) * 255, [104.00698793, 116.66876762,
                                                        122.67891434])
        assert entry.num_params is None and entry.input_size_text == "any"
        assert entry.loadable and "MIT" in entry.licence and "BSD-2" in entry.licence
        assert "4b988509bfd1" in entry.source
    assert not any("atonce" in name.lower() for name in zoo.names())  # see zoo.py: why


def test_zoo_lists_them_with_their_md5(capsys):
    assert main(["zoo"]) == 0
    table = capsys.readouterr().out
    for variant, (url, md5, _) in PUBLISHED.items():
        assert f"FCN-VGG16 reference layout (Caffe, pad 100); md5 {md5}; {url}" in table
        assert any(line.startswith(f"pytorch-fcn/{variant} ") and "not published" in line
                   for line in table.splitlines())
    assert "sha256 1167a1af;" in table  # torchvision's stay SHA-256


def test_the_released_file_loads_as_reference_with_and_without_being_told(released):
    path, _, state = released
    for model in (load_model(path), load_model(path, layout="reference")):
        assert (model.config.name, model.config.layout, model.config.fc_channels) == (
            "fcn8s", "reference", FC)
        assert model.meta.color_order == "bgr"
        assert np.allclose(np.array(model.meta.mean) * 255, CAFFE_MEAN_BGR)
        assert torch.equal(model.state_dict()["upscore8.weight"][:, 0], bilinear(16).expand(
            21, 16, 16))
        assert torch.equal(model.state_dict()["conv1_1.weight"], state["conv1_1.weight"])


@pytest.mark.parametrize("content_type", ["application/octet-stream", None])
def test_fetch_verifies_the_md5_and_prepares_a_reference_checkpoint(released, serve, tmp_path,
                                                                    content_type):
    path, md5, state = released
    server = serve(path.read_bytes(), content_type)
    cache, lines = tmp_path / "cache", []
    prepared = prepare(NAME, cache=cache, progress=False, log=lines.append)
    assert prepared == cache / "test" / "pytorch-fcn8s.pt"
    assert files(cache) == ["fcn8s_from_caffe.pth", "test", "test/pytorch-fcn8s.pt"]
    assert (cache / "fcn8s_from_caffe.pth").read_bytes() == path.read_bytes()
    saved = torch.load(prepared, map_location="cpu", weights_only=True)
    assert saved["source"] == {"zoo": NAME, "file": path.name, "url": server.url, "md5": md5}

    model = load_model(prepared)
    assert (model.config.layout, model.config.name, model.meta.color_order) == (
        "reference", "fcn8s", "bgr")
    assert model.meta.classes == zoo.PYTORCH_FCN_CLASSES
    assert np.allclose(np.array(model.meta.mean) * 255, CAFFE_MEAN_BGR)
    assert np.allclose(model.meta.std, (1 / 255,) * 3)
    loaded = model.state_dict()
    for key in ("conv1_1.weight", "fc7.bias", "score_pool3.weight"):
        assert torch.equal(loaded[key], state[key]), key
    assert torch.equal(loaded["upscore2.weight"][:, 0], state["upscore2.weight"][0, 0].expand(
        21, 4, 4))

    mtime = prepared.stat().st_mtime_ns
    assert prepare(NAME, cache=cache, progress=False, log=lines.append) == prepared
    assert prepared.stat().st_mtime_ns == mtime and len(server.log) == 1  # reused


def test_a_download_with_another_md5_is_refused_and_not_kept(released, serve, tmp_path):
    server = serve(damaged(released[0].read_bytes()))
    cache = tmp_path / "cache"
    with pytest.raises(ModelFormatError) as caught:
        prepare(NAME, cache=cache, progress=False, log=lambda line: None)
    message = str(caught.value)
    assert f"expected {released[1]}" in message and message.startswith(server.url)
    assert "MD5 " in message and "\n" not in message
    assert not cache.exists() or files(cache) == []


def test_a_weights_file_with_another_md5_is_refused(entry, released, tmp_path, capsys):
    other = tmp_path / "other.pth"
    other.write_bytes(damaged(released[0].read_bytes()))
    cache = tmp_path / "cache"
    assert main(["fetch", NAME, "--weights", str(other), "--cache", str(cache)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"the published MD5 is {released[1]}" in err
    assert "nothing was written" in err and not cache.exists()


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", None])
def test_google_drives_confirmation_page_is_one_line_and_not_kept(released, serve, tmp_path,
                                                                  capsys, content_type):
    server = serve(GOOGLE_PAGE, content_type)
    cache = tmp_path / "cache"
    assert main(["fetch", NAME, "--cache", str(cache)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("fcn-edge fetch: ")
    assert f"download it in a browser from {server.url}" in err
    assert "confirmation page" in err and "--weights FILE" in err
    assert not cache.exists() or files(cache) == []
    with pytest.raises(FcnEdgeError, match="web page, not the file"):
        prepare(NAME, cache=cache, progress=False, log=lambda line: None)


def test_a_weights_file_of_another_variant_is_refused(released, tmp_path):
    state = pytorch_fcn_state("fcn16s")
    path = tmp_path / "fcn16s_from_caffe.pth"
    torch.save(state, path)
    register(hashlib.md5(path.read_bytes()).hexdigest())
    try:
        with pytest.raises(ModelFormatError, match=f"not {NAME}'s weights: it holds a vgg16 "
                                                   f"fcn16s, expected the released VGG16 fcn8s"):
            prepare(NAME, weights=path, cache=tmp_path / "cache", log=lambda line: None)
    finally:
        zoo.unregister(NAME)
    assert not (tmp_path / "cache").exists()


def test_md5_hashes_are_checked_and_sha256_pins_refused(entry):
    with pytest.raises(InputError, match="publishes md5:"):
        prepare(NAME, weights="unused.pth", sha256="ab" * 32, log=lambda line: None)
    with pytest.raises(InputError, match="give a SHA-256"):
        prepare(NAME, weights="unused.pth", sha256="md5:" + "ab" * 16, log=lambda line: None)
    for bad in ({"md5": "abc"}, {"md5": "ab" * 16, "sha256": "ab" * 32}):
        with pytest.raises(InputError):
            zoo.PretrainedEntry(**{**entry.__dict__, **bad})


@pytest.mark.parametrize("content_type", ["text/html", None])
def test_the_downloader_never_keeps_a_web_page_even_with_no_hash_to_check(tmp_path,
                                                                           content_type):
    """Where nothing is published (trust on first use) the page would have been trusted."""
    with serve_file(GOOGLE_PAGE, "uc?id=test") as server:
        server.content_type = content_type
        with pytest.raises(FcnEdgeError, match="web page, not the file"):
            download(server.url, None, tmp_path / "w.pth", progress=False,
                     log=lambda line: None)
    assert list(tmp_path.iterdir()) == []


def test_the_downloader_checks_an_md5(tmp_path):
    data = b"PK\x03\x04 a weights file"
    md5 = hashlib.md5(data).hexdigest()
    with serve_file(data, "w.pth") as server:
        path = download(server.url, f"md5:{md5.upper()}", tmp_path / "w.pth", progress=False,
                        log=lambda line: None)
        assert path.read_bytes() == data
        with pytest.raises(ModelFormatError, match=f"MD5 {md5}, expected {'0' * 32};"):
            download(server.url, "md5:" + "0" * 32, tmp_path / "x.pth", progress=False,
                     log=lambda line: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]


def write_video(path, frames: int = 2, size: tuple[int, int] = (48, 64)) -> None:
    """A small MJPG video of random frames."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, size[::-1])
    gen = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(gen.integers(0, 256, (*size, 3), dtype=np.uint8))
    writer.release()


def test_run_takes_the_zoo_name_and_its_weights_file(entry, released, tmp_path, monkeypatch,
                                                     capsys):
    import cv2

    monkeypatch.setenv("FCN_EDGE_CACHE", str(tmp_path / "cache"))
    write_video(tmp_path / "in.avi")
    out = tmp_path / "out.avi"
    assert main(["run", str(tmp_path / "in.avi"), "--model", NAME, "--weights",
                 str(released[0]), "--output", str(out), "--no-live"]) == 0
    assert (tmp_path / "cache" / "test" / "pytorch-fcn8s.pt").is_file()
    video = cv2.VideoCapture(str(out))
    try:
        assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 2
        assert (video.get(cv2.CAP_PROP_FRAME_HEIGHT), video.get(cv2.CAP_PROP_FRAME_WIDTH)) == (
            48, 64)
    finally:
        video.release()
    assert "wrote 2 frames" in capsys.readouterr().out


@pytest.mark.slow
def test_export_fp16_of_the_zoo_name_describes_the_caffe_preprocessing(entry, released,
                                                                        tmp_path, monkeypatch):
    from fcn_edge.runtime.onnx_file import read_onnx_metadata

    monkeypatch.setenv("FCN_EDGE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "export"
    assert main(["export", NAME, "--weights", str(released[0]), "-o", str(out), "--fp16",
                 "--parity-sizes", "64x64"]) == 0
    meta = read_onnx_metadata(out / "pytorch-fcn8s.fp16.onnx")
    assert (meta.precision, meta.color_order, meta.classes) == (
        "fp16", "bgr", zoo.PYTORCH_FCN_CLASSES)
    assert meta.model_options["layout"] == "reference"
    assert np.allclose(np.array(meta.mean) * 255, CAFFE_MEAN_BGR)
    assert np.allclose(meta.std, (1 / 255,) * 3)
