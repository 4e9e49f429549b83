"""``fcn-edge import`` and the files around the model: ONNX's external data format (models over
protobuf's 2 GB limit), ``-o`` naming an existing file or the model itself (replaced whole, only
after the check), a write that fails (the input intact, the real file named), and a model with
several inputs (refused in one line). The models are built with ``onnx.helper``
(``support_onnx``): a few convolutions to a coarse VOC score grid, like jetson-inference's
FCN-ResNet18."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from faults import limit_file_size, run_cli
from fcn_edge.errors import InputError
from fcn_edge.export import import_onnx as importer
from fcn_edge.export.import_onnx import (PROTOBUF_LIMIT, ImportOptions, import_onnx,
                                         needs_external_data)
from fcn_edge.runtime import Segmenter
from support import smooth_image
from support_onnx import coarse_model

QUIET = {"log": lambda line: None}


def _frame(h: int = 64, w: int = 96) -> np.ndarray:
    return smooth_image(0, h, w)


def _labels(path: Path) -> np.ndarray:
    with Segmenter(path) as seg:
        return seg(_frame())


def test_the_size_rule_chooses_external_data_at_protobufs_limit():
    assert PROTOBUF_LIMIT == 2**31 - 1
    assert not needs_external_data(2**31 - 2)
    assert needs_external_data(2**31 - 1) and needs_external_data(3 * 2**30)
    assert needs_external_data(1000, limit=1000) and not needs_external_data(999, limit=1000)


def test_a_model_with_external_data_imports(tmp_path):
    """A model whose tensors live in an external data file (as every model over 2 GB does) is
    read with them; the result, small, is one self-contained file."""
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    src = src_dir / "big.onnx"
    onnx.save_model(coarse_model(), str(src), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="big.weights", size_threshold=0)
    assert (src_dir / "big.weights").stat().st_size > src.stat().st_size
    out = import_onnx(src, ImportOptions(classes="voc"), tmp_path / "out" / "m.onnx", **QUIET)
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx"]
    assert _labels(out).shape == (64, 96)


def test_a_result_over_the_limit_is_written_with_external_data(tmp_path, monkeypatch):
    """Past the limit (lowered here: a 2 GB file is not made in a test) the result keeps its
    tensors in OUT.onnx.data beside it; both are moved into place, and the pair runs from any
    folder it is moved to together."""
    src = tmp_path / "m.onnx"
    onnx.save(coarse_model(width=64), str(src))
    monkeypatch.setattr(importer, "PROTOBUF_LIMIT", 4096)
    out = import_onnx(src, ImportOptions(classes="voc"), tmp_path / "out" / "m.fcn.onnx",
                      **QUIET)
    files = {p.name: p.stat().st_size for p in out.parent.iterdir()}
    assert set(files) == {"m.fcn.onnx", "m.fcn.onnx.data"}, files
    assert files["m.fcn.onnx.data"] > 4096 > files["m.fcn.onnx"]
    modes = {(out.parent / name).stat().st_mode & 0o777 for name in files}
    assert len(modes) == 1, modes  # the data as readable as the model
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for name in files:
        (out.parent / name).rename(moved / name)
    assert np.array_equal(_labels(moved / "m.fcn.onnx"), _labels(_import_plain(src, tmp_path)))


def _import_plain(src: Path, tmp_path: Path) -> Path:
    return import_onnx(src, ImportOptions(classes="voc"), tmp_path / "plain.onnx", **QUIET)


def test_output_may_replace_the_model_itself(tmp_path):
    """-o naming the model: checked against the original, then put in its place whole."""
    src = tmp_path / "m.onnx"
    onnx.save(coarse_model(), str(src))
    expected = _labels(_import_plain(src, tmp_path))
    assert import_onnx(src, ImportOptions(classes="voc"), src, **QUIET) == src
    assert any(p.key == "format" for p in onnx.load(str(src)).metadata_props)
    assert np.array_equal(_labels(src), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "plain.onnx"]


@pytest.mark.parametrize("target", ["itself", "existing"])
def test_a_failed_write_keeps_the_file_it_would_replace(tmp_path, target):
    """A write that fails half way (a file size limit, as a full disk) leaves the file -o names
    as it was — the model itself too — and no staged file; the line names the real file."""
    src = tmp_path / "m.onnx"
    onnx.save(coarse_model(width=512), str(src))  # about 0.5 MB
    out = src if target == "itself" else tmp_path / "old.onnx"
    if target == "existing":
        out.write_bytes(b"the previous import")
    before = out.read_bytes()
    done = run_cli(["import", src, "--classes", "voc", "-o", out],
                   preexec_fn=limit_file_size(src.stat().st_size // 2))
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == f"fcn-edge import: cannot write {out}: File too large " \
        f"(raise the file size limit (ulimit -f) or choose another --output)", done.stderr
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"m.onnx", out.name})


def test_a_model_with_several_inputs_is_refused_in_one_line(tmp_path):
    src = tmp_path / "two.onnx"
    onnx.save(coarse_model(inputs=("rgb", "depth")), str(src))
    out = tmp_path / "never.onnx"
    with pytest.raises(InputError, match=r"has 2 inputs \(rgb, depth\): fcn-edge import takes "
                                         r"single-input segmentation models") as info:
        import_onnx(src, ImportOptions(classes="voc"), out, **QUIET)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.onnx"]
