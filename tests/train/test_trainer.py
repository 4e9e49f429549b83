"""The trainer end to end on small procedural data: checkpoints, resume, divergence, staging."""
import csv
import json

import pytest
import torch

from fcn_edge.config import ModelConfig, TrainConfig
from fcn_edge.data import PROCEDURAL_CLASSES
from fcn_edge.errors import ModelFormatError, TrainingDiverged
from fcn_edge.models import load_model, read_weights
from fcn_edge.train import evaluate_checkpoint, train


def small(tmp_path, name="fcn32s", backbone="resnet18", **kw):
    model = ModelConfig(name=name, backbone=backbone,
                        **({"fc_channels": 16} if backbone != "resnet18" else {}))
    base = dict(model=model, num_images=6, val_images=3, image_size=(64, 64), epochs=2,
                out_dir=str(tmp_path), threads=1, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_a_run_writes_deployable_checkpoints_and_logs(tmp_path):
    result = train(small(tmp_path), progress=False)
    assert result.last_path == tmp_path / "last.pt" and result.best_path == tmp_path / "best.pt"
    assert [row["epoch"] for row in result.history] == [1, 2]
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert json.loads(open(tmp_path / "config.json").read())["epochs"] == 2
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert set(lines[0]["per_class_iou"]) == set(PROCEDURAL_CLASSES)
    # The checkpoint describes itself: classes, palette, normalisation, metrics, config.
    model = load_model(result.best_path)
    assert model.config.num_classes == len(PROCEDURAL_CLASSES)
    assert model.meta.classes == tuple(PROCEDURAL_CLASSES)
    assert len(model.meta.palette) == len(PROCEDURAL_CLASSES)
    assert model.meta.mean == (0.485, 0.456, 0.406) and model.meta.color_order == "rgb"
    assert model.meta.metrics["mean_iou"] == pytest.approx(result.best_miou)
    # Re-evaluating the best checkpoint on the same validation scenes gives the logged number.
    metrics, classes = evaluate_checkpoint(result.best_path, num_images=3, image_size=(64, 64),
                                           seed=3, device="cpu")
    assert metrics.mean_iou == pytest.approx(result.best_miou)
    assert classes == list(PROCEDURAL_CLASSES)


def test_training_learns(tmp_path):
    # Four scenes, eight epochs: the per-pixel loss on them must fall steadily (the benchmark,
    # not this test, measures validation accuracy on a real budget).
    cfg = small(tmp_path, name="fcn8s", num_images=4, val_images=2, epochs=8, lr=0.01,
                schedule="poly", translate=0, mirror=False)
    result = train(cfg, progress=False)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.4 * losses[0], losses
    assert losses[-1] == min(losses), losses


def _tensors(path):
    return read_weights(path).state_dict


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    # AlexNet has dropout (torch RNG) and loss sampling draws cells: both must resume exactly.
    opts = dict(name="fcn16s", backbone="alexnet", epochs=3, loss_sample_p=0.3, lr=1e-3,
                schedule="poly")
    train(small(tmp_path / "straight", **opts), progress=False)

    def interrupt(epoch, row, model):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(small(tmp_path / "split", **opts), on_epoch_end=interrupt, progress=False)
    assert read_weights(tmp_path / "split" / "last.pt").checkpoint["train_state"]["epoch"] == 1
    train(small(tmp_path / "split", resume=str(tmp_path / "split" / "last.pt"), **opts),
          progress=False)
    a, b = _tensors(tmp_path / "straight" / "last.pt"), _tensors(tmp_path / "split" / "last.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    history = read_weights(tmp_path / "split" / "last.pt").checkpoint["train_state"]["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    def poison(epoch, row, model):
        with torch.no_grad():
            model.score_fr.bias.fill_(float("nan"))  # what a diverging step would leave

    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2.*last good checkpoint"):
        train(small(tmp_path, epochs=3), on_epoch_end=poison, progress=False)
    kept = read_weights(tmp_path / "last.pt")
    assert kept.checkpoint["train_state"]["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in kept.state_dict.values() if t.is_floating_point())


def test_resume_refuses_a_plain_model_checkpoint(tmp_path):
    from fcn_edge.models import create_model, save_checkpoint

    path = save_checkpoint(create_model("fcn32s", num_classes=8, backbone="resnet18"),
                           tmp_path / "plain.pt")
    with pytest.raises(ModelFormatError, match="not a training checkpoint.*--init-from"):
        train(small(tmp_path, resume=str(path)), progress=False)


def test_staged_training_starts_from_the_coarser_net(tmp_path):
    coarse = train(small(tmp_path / "32s", epochs=1), progress=False)
    fine = train(small(tmp_path / "16s", name="fcn16s", epochs=1, max_steps=0,
                       init_from=str(coarse.best_path)), progress=False)
    a, b = _tensors(coarse.best_path), _tensors(fine.last_path)
    assert torch.equal(a["layer4.1.conv2.weight"], b["layer4.1.conv2.weight"])
    assert torch.equal(a["score_fr.weight"], b["score_fr.weight"])
    assert b["score_pool4.weight"].abs().sum() == 0  # new skip layer starts at zero (§4.2)
