"""What an export must survive and what it must catch.

* A bug in fcn-edge's own metadata writer (mean and std swapped, the colour order reversed, a
  class dropped, an extra modality's order or encoding wrong) fails the export with one line
  naming the field: the bugs are injected here by replacing our metadata function, and the
  parity check is shown to use the checkpoint's normalisation, not the artifact's.
* Every option is checked before any work is done.
* A failed, interrupted or disk-full export leaves nothing new behind: no folder, no partial
  ``.onnx``/``.json``, no Triton model, nothing ``fcn-edge run`` would pick up as the newest
  export. Full disks are real: a size-limited tmpfs (root only) and an ``RLIMIT_FSIZE`` child.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from faults import limit_file_size, run_cli, small_filesystem
from fcn_edge.cli import main
from fcn_edge.errors import InputError, ModelFormatError
from fcn_edge.export import exporter, parity
from fcn_edge.export.exporter import ExportConfig, export
from fcn_edge.export.runners import ort_run
from fcn_edge.models import create_model, load_model, save_checkpoint
from fcn_edge.runtime.metadata import ArtifactMeta

SIZES = ((64, 64), (33, 47))
QUIET = {"log": lambda line: None}


def _props(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _tree(root: Path) -> set[str]:
    """Every file and folder under ``root``, hidden ones too."""
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


# --- metadata bugs: caught by the export, not by a user weeks later ---------------------------

def _swap_mean_std(meta: ArtifactMeta) -> ArtifactMeta:
    return meta.with_(mean=meta.std, std=meta.mean)


def _reverse_colours(meta: ArtifactMeta) -> ArtifactMeta:
    return meta.with_(color_order="bgr" if meta.color_order == "rgb" else "rgb")


def _drop_class(meta: ArtifactMeta) -> ArtifactMeta:
    n = meta.num_classes - 1
    return meta.with_(num_classes=n, classes=meta.classes[:n], palette=meta.palette[:n])


#: A realistic bug in the metadata writer → the field the export must name.
WRITER_BUGS = {"mean and std swapped": (_swap_mean_std, "mean"),
               "colour order reversed": (_reverse_colours, "color_order"),
               "a class dropped": (_drop_class, "num_classes")}


@pytest.mark.parametrize("raw_io", [False, True], ids=["normalised-in", "raw-io"])
@pytest.mark.parametrize("bug", WRITER_BUGS)
def test_a_metadata_bug_fails_the_export(checkpoint, tmp_path, monkeypatch, bug, raw_io):
    wrong, field = WRITER_BUGS[bug]
    real = exporter.artifact_meta
    monkeypatch.setattr(exporter, "artifact_meta", lambda *a, **k: wrong(real(*a, **k)))
    out = tmp_path / "out"
    with pytest.raises(ModelFormatError, match=f"'{field}'") as caught:
        export(ExportConfig(str(checkpoint), out_dir=str(out), raw_io=raw_io,
                            parity_sizes=SIZES), **QUIET)
    assert "\n" not in str(caught.value)
    assert not out.exists()


def test_a_bug_in_the_written_props_fails_the_export(checkpoint, tmp_path, monkeypatch, capsys):
    """The check reads back what is written, not the object it was written from."""
    real = ArtifactMeta.to_props
    monkeypatch.setattr(ArtifactMeta, "to_props",
                        lambda self: real(_swap_mean_std(self)))
    code = main(["export", str(checkpoint), "-o", str(tmp_path), "--parity-sizes", "64x64"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "'mean'" in err and "checkpoint" in err
    assert _tree(tmp_path) == set()


def test_parity_normalises_the_reference_from_the_checkpoint(checkpoint, tmp_path):
    """A correct graph fed as wrong metadata says fails parity: the reference does not read it."""
    result = export(ExportConfig(str(checkpoint), out_dir=str(tmp_path), parity_sizes=SIZES),
                    **QUIET)
    onnx_model = onnx.load(str(result.artifacts["fp32"]))
    meta = ArtifactMeta.from_props(_props(result.artifacts["fp32"]))
    model = load_model(checkpoint)
    parity.check_parity(model, ort_run(onnx_model), meta, SIZES[:1])  # as written: passes
    for wrong in (_swap_mean_std, _reverse_colours):
        with pytest.raises(ModelFormatError, match="PyTorch"):
            parity.check_parity(model, ort_run(onnx_model), wrong(meta), SIZES[:1])


@pytest.fixture(scope="module")
def rgbd_checkpoint(tmp_path_factory) -> Path:
    from fcn_edge.data import PROCEDURAL_CLASSES, voc_palette

    model = create_model("fcn32s", backbone="resnet18", num_classes=8, in_channels=4)
    meta = {"classes": list(PROCEDURAL_CLASSES), "palette": voc_palette(8).tolist(),
            "inputs": ["rgb", "depth"],
            "dataset": {"spec": "synthetic-rgbd", "image_size": [48, 48]}}
    return save_checkpoint(model, tmp_path_factory.mktemp("rgbd") / "rgbd.pt", meta)


def _reverse_inputs(meta: ArtifactMeta) -> ArtifactMeta:
    return meta.with_(inputs=meta.inputs[::-1])


def _other_depth_encoding(meta: ArtifactMeta) -> ArtifactMeta:
    depth = meta.inputs[1]
    wrong = depth.__class__(**{**depth.__dict__, "encoding": {**depth.encoding, "mean_m": 0.0}})
    return meta.with_(inputs=(meta.inputs[0], wrong))


@pytest.mark.parametrize("wrong", [_reverse_inputs, _other_depth_encoding],
                         ids=["inputs reversed", "depth encoding"])
def test_an_extra_modality_bug_fails_the_export(rgbd_checkpoint, tmp_path, monkeypatch, wrong):
    real = exporter.artifact_meta
    monkeypatch.setattr(exporter, "artifact_meta", lambda *a, **k: wrong(real(*a, **k)))
    with pytest.raises(ModelFormatError, match="'inputs'"):
        export(ExportConfig(str(rgbd_checkpoint), out_dir=str(tmp_path / "out"),
                            parity_sizes=((48, 48),)), **QUIET)
    assert not (tmp_path / "out").exists()


# --- options: all checked before any work ------------------------------------------------------

@pytest.mark.parametrize("options, name", [  # the message names the setting (field or flag)
    ({"int8": True, "calib_images": 0}, "calib.images"),
    ({"eval_images": -1}, "eval.images"),
    ({"opset": 16}, "opset"),
    ({"workspace_gb": 0.0}, "workspace"),
    ({"workspace_gb": float("nan")}, "workspace"),
    ({"parity_sizes": ((0, 0),)}, "parity.sizes"),
    ({"parity_sizes": ()}, "parity.sizes"),
    ({"labels_dtype": "int64"}, "labels-dtype"),
    ({"shapes": "64x64:32x32:128x128"}, "shapes"),
    ({"int8_target": "gpu"}, "int8-target"),
])
def test_every_option_is_checked_when_the_config_is_made(checkpoint, options, name):
    with pytest.raises(InputError, match=name):
        ExportConfig(str(checkpoint), **options)


def test_int8_without_calibration_images_fails_before_any_work(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(checkpoint), "-o", str(out), "--int8",
                 "--calib-images", "0"]) == 1
    captured = capsys.readouterr()
    assert "--calib-images" in captured.err and captured.out == ""
    assert not out.exists()


def test_missing_calibration_data_fails_before_the_fp32_export(checkpoint, tmp_path):
    lines: list[str] = []
    with pytest.raises(InputError):
        export(ExportConfig(str(checkpoint), out_dir=str(tmp_path / "out"), int8=True,
                            calib=str(tmp_path / "no-such-data"), parity_sizes=SIZES),
               log=lines.append)
    assert lines == []  # no parity figures: nothing was computed
    assert not (tmp_path / "out").exists()


# --- failures leave nothing new behind --------------------------------------------------------

def test_a_failed_export_leaves_no_folder(tmp_path, capsys):
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"this is not a checkpoint" * 10)
    assert main(["export", str(bogus), "-o", str(tmp_path / "new" / "deep")]) == 1
    assert "not a readable PyTorch weights file" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def _interrupt_the_triton_write(monkeypatch) -> None:
    """Ctrl-C (or SIGTERM, which the CLI turns into KeyboardInterrupt) right after the Triton
    model's ONNX is written: late, once every artifact has been written somewhere."""
    from fcn_edge.export import triton

    real = triton._write_onnx

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(triton, "_write_onnx", interrupted)


def test_an_interrupted_export_leaves_nothing(checkpoint, tmp_path, monkeypatch):
    _interrupt_the_triton_write(monkeypatch)
    out, repo = tmp_path / "out", tmp_path / "repo"
    with pytest.raises(KeyboardInterrupt):
        export(ExportConfig(str(checkpoint), out_dir=str(out), triton_repo=str(repo),
                            parity_sizes=SIZES[:1]), **QUIET)
    assert not out.exists() and not repo.exists()


def test_an_interrupted_reexport_keeps_the_previous_one(checkpoint, tmp_path, monkeypatch):
    config = dict(out_dir=str(tmp_path / "out"), triton_repo=str(tmp_path / "repo"),
                  parity_sizes=SIZES[:1])
    export(ExportConfig(str(checkpoint), **config), **QUIET)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    _interrupt_the_triton_write(monkeypatch)
    with pytest.raises(KeyboardInterrupt):  # another export: other shapes, other bytes
        export(ExportConfig(str(checkpoint), shapes="32x32:64x64:256x256", **config), **QUIET)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert _tree(tmp_path) == {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                               if not p.name.startswith(".")}


def test_staging_puts_back_what_it_replaced_when_interrupted_midway(tmp_path, monkeypatch):
    """An interrupt between two renames of the commit undoes the first."""
    from fcn_edge.export import staging as staging_module

    (tmp_path / "a.onnx").write_text("old a")
    renames = []
    real = staging_module.os.replace

    def replace(source, target):
        renames.append(target)
        if len(renames) == 3:  # a aside, a in, then b: interrupted
            raise KeyboardInterrupt
        real(source, target)

    with pytest.raises(KeyboardInterrupt):
        with staging_module.Staging() as staging:
            staging.path(tmp_path / "a.onnx").write_text("new a")
            staging.path(tmp_path / "new" / "b.onnx").write_text("new b")
            monkeypatch.setattr(staging_module.os, "replace", replace)
            staging.commit()
    assert _tree(tmp_path) == {"a.onnx"} and (tmp_path / "a.onnx").read_text() == "old a"


# --- a full disk: one line, and nothing `fcn-edge run` would take for an export ---------------

def _assert_one_line_and_nothing_left(done, cwd: Path, before: set[str],
                                      reasons: tuple[str, ...]) -> None:
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert any(reason in lines[0] for reason in reasons), lines[0]
    assert _tree(cwd / "runs") == before
    image = cwd / "frame.png"
    cv2.imwrite(str(image), np.full((32, 32, 3), 128, np.uint8))
    later = run_cli(["run", str(image)], cwd=cwd, timeout=120)  # picks the newest export
    assert later.returncode == 1 and "none exported under runs/" in later.stderr


def test_disk_full_during_export(checkpoint, tmp_path):
    disk = tmp_path / "runs" / "exp"
    with small_filesystem(disk, "512k"):
        before = _tree(tmp_path / "runs")
        done = run_cli(["export", str(checkpoint), "-o", str(disk), "--parity-sizes", "64x64"],
                       cwd=tmp_path)
        _assert_one_line_and_nothing_left(done, tmp_path, before, ("No space left",))


def test_file_size_limit_during_export(checkpoint, tmp_path):
    folder = tmp_path / "runs" / "exp"
    folder.mkdir(parents=True)
    local = folder / "best.pt"
    local.write_bytes(checkpoint.read_bytes())  # `fcn-edge export runs/exp/best.pt`
    before = _tree(tmp_path / "runs")
    done = run_cli(["export", str(local), "--parity-sizes", "64x64", "--triton-repo",
                    str(tmp_path / "runs" / "triton")],
                   cwd=tmp_path, preexec_fn=limit_file_size(1 << 20))
    _assert_one_line_and_nothing_left(done, tmp_path, before, ("File too large",))
