"""The examples run as a user would run them: examples/opencv_loop.py on a video file, and
examples/c_host/host.c compiled against this interpreter's Python and run, its labels held to
the Segmenter's own in Python.

Both run in subprocesses with the repository root on PYTHONPATH, so they import this checkout's
fcn_edge whether or not it is `pip install -e`'d.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcn_edge.runtime import Segmenter

from support import make_checkpoint, read_video, write_video

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
HOST_FRAMES = 3
PATTERN_SIZE = (24, 32)  # host.c: PATTERN_H, PATTERN_W
FRAME_SIZE = (240, 320)  # host.c: FRAME_H, FRAME_W


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A raw-IO + argmax ONNX export of the tests' checkpoint (an FCN-8s whose score layers are
    not at zero, so labels vary)."""
    pytest.importorskip("torch")
    from fcn_edge.export.exporter import ExportConfig, export

    out = tmp_path_factory.mktemp("examples_model")
    config = ExportConfig(str(make_checkpoint(out / "best.pt")), out_dir=str(out), raw_io=True,
                          argmax=True, simplify=False, parity_sizes=((64, 64),))
    return export(config, log=lambda s: None).artifacts["fp32"]


def example_env(**extra: str) -> dict[str, str]:
    """The environment with the repository importable and no display."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "PYTHONHOME")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


# --- (a) the OpenCV loop ----------------------------------------------------------------------

def blob_frames(count: int, size=(64, 96)) -> list[np.ndarray]:
    """``count`` H×W×3 frames of smooth random blobs: they survive the codec, noise would not."""
    rng = np.random.default_rng(0)
    return [cv2.resize(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8), size[::-1],
                       interpolation=cv2.INTER_LINEAR) for _ in range(count)]


def run_loop(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / "opencv_loop.py"), *args], cwd=cwd,
                          env=example_env(), capture_output=True, text=True, timeout=120)


def test_opencv_loop_writes_the_overlay_video(model, tmp_path):
    video = write_video(tmp_path / "in.mp4", blob_frames(6), fps=10.0)
    out = tmp_path / "out.mp4"
    result = run_loop(str(model), "--source", str(video), "--max-frames", "4", "--output",
                      str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^4 frames in [\d.]+ s: [\d.]+ FPS", result.stdout, re.M), result.stdout

    written, inputs = read_video(out), read_video(video)[:4]
    assert len(written) == 4 and written[0].shape == (64, 96, 3)
    seg = Segmenter(model)
    for frame, got in zip(inputs, written):
        expected = seg.overlay(frame, seg(frame))
        # The overlay, not the frame, up to the codec's loss.
        error = np.abs(got.astype(int) - expected).mean()
        assert error < 10 and error < np.abs(got.astype(int) - frame).mean() / 2


def test_opencv_loop_without_display_still_segments(model, tmp_path):
    video = write_video(tmp_path / "in.mp4", blob_frames(3), fps=10.0)
    result = run_loop(str(model), "--source", str(video), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no display" in result.stdout
    assert re.search(r"^3 frames in ", result.stdout, re.M), result.stdout


def test_opencv_loop_names_a_source_it_cannot_open(model, tmp_path):
    result = run_loop(str(model), "--source", str(tmp_path / "missing.mp4"), cwd=tmp_path)
    assert result.returncode != 0 and "cannot open" in result.stderr


# --- (b) the C host ---------------------------------------------------------------------------

def pattern(h: int, w: int, t: int) -> np.ndarray:
    """host.c's fill_pattern, in numpy: the frame t of the synthetic video, BGR."""
    y, x = np.mgrid[0:h, 0:w]
    xs = x + 4 * t
    frame = np.stack([(xs * 3) & 255, (y * 5) & 255,
                      np.where(((xs // 16) + (y // 16)) & 1, 220, 30)], axis=-1)
    frame[(x - w // 2) ** 2 + (y - h // 2) ** 2 < (min(h, w) // 4) ** 2] = (40, 200, 240)
    return frame.astype(np.uint8)


def embed_flags() -> list[str]:
    """Compiler and linker flags that embed this interpreter's Python (what `python3-config
    --cflags --embed --ldflags` prints, for the running Python even inside a venv), or a skip."""
    if sys.platform == "win32":
        pytest.skip("the C host example is built with a POSIX cc")
    var = lambda name: sysconfig.get_config_var(name) or ""  # noqa: E731
    paths = sysconfig.get_paths()
    includes = [paths["include"], paths.get("platinclude", paths["include"])]
    if not any((Path(d) / "Python.h").is_file() for d in includes):
        pytest.skip(f"no Python.h in {paths['include']} (install the python3-dev package)")
    libdirs = [d for d in (var("LIBDIR"), var("LIBPL"),
                           var("LIBDIR") and os.path.join(var("LIBDIR"), var("MULTIARCH"))) if d]
    version = var("LDVERSION") or var("VERSION")
    names = {var("LDLIBRARY"), var("LIBRARY"), f"libpython{version}.so", f"libpython{version}.a",
             f"libpython{version}.dylib"} - {""}
    if not any((Path(d) / n).exists() for d in libdirs for n in names):
        pytest.skip(f"no libpython{version} in {libdirs} to link against")
    return ([f"-I{d}" for d in dict.fromkeys(includes)] + [f"-L{d}" for d in libdirs]
            + [f"-Wl,-rpath,{var('LIBDIR')}", f"-lpython{version}"]
            + shlex.split(var("LIBS")) + shlex.split(var("SYSLIBS"))
            + shlex.split(var("LINKFORSHARED")))


@pytest.fixture(scope="module")
def host(tmp_path_factory) -> Path:
    """examples/c_host/host.c, compiled into a temporary folder for the running Python."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH")
    flags = embed_flags()
    exe = tmp_path_factory.mktemp("c_host") / "host"
    build = subprocess.run([*shlex.split(cc), "-O1", "-Wall", "-o", str(exe),
                            str(EXAMPLES / "c_host" / "host.c"), *flags],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, f"{' '.join(build.args)}\n{build.stderr}"
    return exe


def run_host(host: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    # FCN_EDGE_PYTHON: the embedded interpreter starts as this venv's python would start.
    env = example_env(FCN_EDGE_PYTHON=sys.executable, **env)
    return subprocess.run([str(host), *args], env=env, capture_output=True, text=True,
                          timeout=120)


def parse_host_output(stdout: str) -> tuple[np.ndarray, list[dict[int, int]]]:
    """The pattern's label map and each frame's {class: pixels}, as host.c prints them."""
    lines = stdout.splitlines()
    start = lines.index(f"pattern {PATTERN_SIZE[0]}x{PATTERN_SIZE[1]} labels:") + 1
    rows = [[int(v) for v in line.split()] for line in lines[start:start + PATTERN_SIZE[0]]]
    histograms = []
    for line in lines:
        if line.startswith("frame "):
            counts = line.split(" histogram")[1].split()
            histograms.append({int(c): int(n) for c, n in (kv.split(":") for kv in counts)})
    return np.array(rows), histograms


def histogram(labels: np.ndarray) -> dict[int, int]:
    classes, counts = np.unique(labels, return_counts=True)
    return {int(c): int(n) for c, n in zip(classes, counts)}


def test_c_host_labels_match_python(host, model):
    result = run_host(host, str(model), "-", str(HOST_FRAMES))
    assert result.returncode == 0, result.stdout + result.stderr
    # It ran in this venv (its numpy and onnxruntime), not in the base Python.
    assert f" in {sys.prefix}\n" in result.stdout, result.stdout

    pattern_labels, histograms = parse_host_output(result.stdout)
    seg = Segmenter(model)
    np.testing.assert_array_equal(pattern_labels, seg(pattern(*PATTERN_SIZE, 0)))
    expected = [histogram(seg(pattern(*FRAME_SIZE, t))) for t in range(HOST_FRAMES)]
    assert histograms == expected
    assert len(np.unique(pattern_labels)) > 1, "a pattern of one class tests little"
    # Frames from C memory reached ONNX Runtime without a copy by fcn-edge.
    assert f"fcn-edge copies: 0 over {HOST_FRAMES} frames (zero-copy)" in result.stdout


def test_c_host_reads_a_ppm_image(host, model, tmp_path):
    image = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    path = tmp_path / "frame.ppm"
    assert cv2.imwrite(str(path), image)
    result = run_host(host, str(model), str(path), "2")
    assert result.returncode == 0, result.stdout + result.stderr
    _, histograms = parse_host_output(result.stdout)
    assert histograms == [histogram(Segmenter(model)(image))] * 2


def test_c_host_fails_cleanly(host, model, tmp_path):
    result = run_host(host, str(tmp_path / "missing.onnx"))
    assert result.returncode == 1
    assert "InputError" in result.stderr and "missing.onnx" in result.stderr
    result = run_host(host)
    assert result.returncode == 2 and "usage:" in result.stderr
