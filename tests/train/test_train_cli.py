"""`fcn-edge train` and `fcn-edge eval` on a real VOC-layout folder (written by write_voc)."""
import json

import numpy as np
import pytest
import torch

from fcn_edge.cli import main
from fcn_edge.data import PROCEDURAL_CLASSES, open_dataset, read_palette_png, write_voc


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    write_voc(open_dataset("synthetic", "train", num_images=4, size=(48, 64), seed=1), root,
              split="train")
    write_voc(open_dataset("synthetic", "val", num_images=3, size=(48, 64), seed=1), root,
              split="val")
    return root


def test_train_then_eval_on_a_voc_folder(voc_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(voc_root), "--model", "fcn32s", "--epochs", "1",
                 "--threads", "1", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    assert (out / "best.pt").exists() and (out / "last.pt").exists()
    assert "best mean IU" in capsys.readouterr().out

    preds, report = tmp_path / "preds", tmp_path / "metrics.json"
    assert main(["eval", str(out / "best.pt"), "--data", str(voc_root), "--split", "val",
                 "--json", str(report), "--save-predictions", str(preds), "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    for word in ("pixel accuracy", "mean IU", "f.w. IU", *PROCEDURAL_CLASSES):
        assert word in table
    metrics = json.loads(report.read_text())
    assert metrics["class_names"] == list(PROCEDURAL_CLASSES)
    assert metrics["num_pixels"] > 0 and 0.0 <= metrics["mean_iou"] <= 1.0
    pngs = sorted(preds.glob("*.png"))
    assert len(pngs) == 3
    labels, palette = read_palette_png(pngs[0])
    assert labels.shape == (48, 64) and labels.max() < len(PROCEDURAL_CLASSES)
    assert palette.shape[1] == 3


def test_bad_training_arguments_are_one_line_errors(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fcn-edge train:") and "nowhere" in err[0]
    assert main(["train", "--scale", "0.5", "--out", str(tmp_path)]) == 1
    assert "--scale takes 2 comma-separated numbers" in capsys.readouterr().err


def test_eval_refuses_data_with_other_classes(voc_root, tmp_path, capsys):
    from fcn_edge.models import create_model, save_checkpoint

    ckpt = save_checkpoint(create_model("fcn32s", num_classes=3, backbone="resnet18"),
                           tmp_path / "three.pt")
    assert main(["eval", str(ckpt), "--data", str(voc_root), "--device", "cpu"]) == 1
    assert "predicts 3 classes but the data has 8" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)")
def test_cuda_training_with_mixed_precision_writes_a_cpu_loadable_checkpoint(tmp_path):
    from fcn_edge.config import ModelConfig, TrainConfig
    from fcn_edge.models import load_model
    from fcn_edge.train import train

    cfg = TrainConfig(model=ModelConfig("fcn8s", backbone="resnet18"), num_images=4,
                      val_images=2, image_size=(64, 64), epochs=1, device="cuda",
                      out_dir=str(tmp_path))
    result = train(cfg, progress=False)
    model = load_model(result.last_path)
    assert all(np.isfinite(p.detach().numpy()).all() for p in model.parameters())


def test_resume_from_the_cli_continues_in_the_checkpoints_folder(voc_root, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--threads", "1", "--quiet", "--device", "cpu"]
    assert main(["train", "--data", str(voc_root), "--model", "fcn32s", "--epochs", "1",
                 "--out", str(out), *common]) == 0
    # No --out: the run continues beside its checkpoint; --epochs 2 extends it by one epoch.
    assert main(["train", "--resume", str(out / "last.pt"), "--epochs", "2", *common]) == 0
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    # Resuming a finished run without more epochs does nothing and says so.
    assert main(["train", "--resume", str(out / "last.pt"), *common]) == 0
    assert "nothing to do" in capsys.readouterr().out
