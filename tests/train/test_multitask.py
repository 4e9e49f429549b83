"""Multi-task training (paper §5, SIFT Flow): one trunk, a head per task, a weighted loss,
each task scored apart (Table 5) — on the procedural two-task scenes."""
import json

import numpy as np
import pytest
import torch

from fcn_edge.cli import main
from fcn_edge.config import EvalConfig, ModelConfig, TrainConfig
from fcn_edge.data import GEOMETRIC_CLASSES, PROCEDURAL_CLASSES, open_dataset, voc_palette
from fcn_edge.errors import InputError
from fcn_edge.models import build, load_model, read_weights, save_checkpoint
from fcn_edge.models.multihead import MultiHeadFCN
from fcn_edge.train import evaluate_checkpoint, evaluate_checkpoint_tasks, train
from fcn_edge.train.loader import pad_collate
from fcn_edge.train.tasks import select_tasks, task_palette

FOUR = ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou")


def two_task(tmp_path, **kw):
    base = dict(model=ModelConfig(name="fcn32s", backbone="resnet18"), data="synthetic-twotask",
                num_images=16, val_images=4, image_size=(32, 32), epochs=1, batch_size=4,
                out_dir=str(tmp_path), threads=1, seed=5, optimizer="adamw")
    base.update(kw)
    return TrainConfig(**base)


def test_a_two_task_run_writes_a_checkpoint_with_every_head(tmp_path):
    result = train(two_task(tmp_path), progress=False)
    row = result.history[0]
    for task in ("semantic", "geometric"):
        assert all(0.0 <= row[f"{task}/{k}"] <= 1.0 for k in FOUR)
    # The top-level metrics are the primary (first) head's: they pick best.pt.
    assert all(row[k] == row[f"semantic/{k}"] for k in FOUR)
    assert row["mean_iou"] != row["geometric/mean_iou"]
    model = load_model(result.best_path)
    assert isinstance(model, MultiHeadFCN)
    assert model.config.heads == (("semantic", 8), ("geometric", 3))
    meta = model.meta
    assert meta.classes == tuple(PROCEDURAL_CLASSES) and meta.inputs == ("rgb",)
    assert list(meta.tasks) == ["semantic", "geometric"]
    geometric = meta.tasks["geometric"]
    assert geometric.classes == tuple(GEOMETRIC_CLASSES)
    assert geometric.palette == tuple(map(tuple, voc_palette(3).tolist()))
    assert geometric.metrics["mean_iou"] == pytest.approx(row["geometric/mean_iou"])
    assert meta.tasks["semantic"].metrics["mean_iou"] == meta.metrics["mean_iou"]
    assert meta.dataset.spec == "synthetic-twotask"
    assert meta.dataset.image_size == (32, 32)
    # Re-scoring the checkpoint on the same validation scenes gives the logged numbers.
    scores = evaluate_checkpoint_tasks(EvalConfig(result.best_path, "synthetic-twotask",
                                                  num_images=4, seed=5, device="cpu"))
    assert list(scores) == ["semantic", "geometric"]
    for task, (metrics, classes) in scores.items():
        assert metrics.mean_iou == pytest.approx(row[f"{task}/mean_iou"])
    assert scores["geometric"][1] == list(GEOMETRIC_CLASSES)
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert "geometric/mean_iou" in header
    logged = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert set(logged["per_task_class_iou"]["geometric"]) == set(GEOMETRIC_CLASSES)


def _heads(state, task):
    prefix = "fcn.score" if task == "semantic" else f"extra_heads.{task}.score"
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def test_a_head_weighted_zero_is_left_alone_and_weights_change_the_trunk(tmp_path):
    # Heads start from non-zero scores, so weight decay alone would move a head that merely
    # got a zero gradient; two steps, so that the second reaches the trunk through the heads.
    torch.manual_seed(0)
    start = build(ModelConfig(name="fcn32s", backbone="resnet18",
                              heads=(("semantic", 8), ("geometric", 3))))
    with torch.no_grad():
        for key, param in start.named_parameters():
            if ".score" in key or key.startswith("fcn.score"):
                param.normal_(0, 0.05)
    initial = {k: v.clone() for k, v in start.state_dict().items()}
    save_checkpoint(start, tmp_path / "start.pt")
    runs = {}
    for name, weights in (("zero", (1.0, 0.0)), ("both", (1.0, 1.0))):
        cfg = two_task(tmp_path / name, num_images=8, batch_size=4, task_weights=weights,
                       optimizer="sgd", lr=0.05, init_from=str(tmp_path / "start.pt"))
        train(cfg, progress=False)
        runs[name] = read_weights(tmp_path / name / "last.pt").state_dict
    geometric = _heads(initial, "geometric")
    assert geometric and all(v.abs().sum() > 0 for v in geometric.values())
    for key, value in geometric.items():
        assert torch.equal(runs["zero"][key], value), key
        assert not torch.equal(runs["both"][key], value), key
    assert any(not torch.equal(runs["zero"][k], v) for k, v in _heads(initial, "semantic").items())
    trunk = [k for k in initial if k.startswith("fcn.layer4") and k.endswith("weight")]
    assert trunk and any(not torch.equal(runs["zero"][k], runs["both"][k]) for k in trunk)


def test_one_task_of_a_two_task_set_trains_a_plain_fcn_on_its_labels(tmp_path):
    result = train(two_task(tmp_path, tasks=("geometric",)), progress=False)
    model = load_model(result.best_path)
    assert not isinstance(model, MultiHeadFCN) and model.config.num_classes == 3
    assert model.meta.task == "geometric" and not model.meta.tasks
    assert model.meta.classes == tuple(GEOMETRIC_CLASSES)
    assert "geometric/mean_iou" not in result.history[0]
    metrics, classes = evaluate_checkpoint(result.best_path, "synthetic-twotask", num_images=4,
                                           seed=5, device="cpu")
    assert classes == list(GEOMETRIC_CLASSES)
    assert metrics.mean_iou == pytest.approx(result.best_miou)


def test_tasks_follow_the_primary_and_weights_follow_their_tasks():
    data = open_dataset("synthetic-twotask", "val", num_images=1, size=(16, 16))
    assert select_tasks(data, None, None) == (("semantic", "geometric"), None)
    assert select_tasks(data, ("geometric", "semantic"), (0.5, 2.0)) == \
        (("semantic", "geometric"), (2.0, 0.5))
    assert select_tasks(data, ("geometric",), None) == (("geometric",), None)
    with pytest.raises(InputError, match="no task depth; its tasks: semantic, geometric"):
        select_tasks(data, ("depth",), None)
    with pytest.raises(InputError, match="task_weights has 3 values for the 2 tasks"):
        select_tasks(data, None, (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="synthetic-twotask"):
        select_tasks(open_dataset("synthetic", "val", num_images=1), ("semantic",), None)
    assert np.array_equal(task_palette(data, "semantic"), data.palette[:8])
    assert np.array_equal(task_palette(data, "geometric"), voc_palette(3))


def test_bad_task_settings_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="not all 0"):
        TrainConfig(task_weights=(0.0, 0.0))
    with pytest.raises(InputError, match="name each task once"):
        TrainConfig(tasks=("semantic", "semantic"))
    with pytest.raises(InputError, match="3 values for the data's 8 classes of the first head"):
        train(two_task(tmp_path, class_weights=(1.0, 1.0, 1.0)), progress=False)
    config = TrainConfig(tasks=("semantic", "geometric"), task_weights=(1.0, 0.5))
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_pad_collate_pads_every_head_mask_with_ignore():
    a = (torch.zeros(3, 4, 5), torch.ones(2, 4, 5, dtype=torch.long))
    b = (torch.zeros(3, 6, 3), torch.full((2, 6, 3), 2, dtype=torch.long))
    images, masks = pad_collate([a, b], ignore_index=255)
    assert images.shape == (2, 3, 6, 5) and masks.shape == (2, 2, 6, 5)
    assert (masks[0, :, :4, :5] == 1).all() and (masks[0, :, 4:] == 255).all()
    assert (masks[1, :, :, :3] == 2).all() and (masks[1, :, :, 3:] == 255).all()


def test_cli_trains_and_scores_two_tasks(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "synthetic-twotask", "--num-images", "8", "--val-images",
                 "3", "--image-size", "32x32", "--model", "fcn32s", "--epochs", "1",
                 "--batch-size", "4", "--tasks", "semantic,geometric", "--task-weights",
                 "1,0.5", "--threads", "1", "--out", str(out), "--quiet",
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "geometric: pixel acc" in printed
    saved = json.loads((out / "config.json").read_text())
    assert saved["tasks"] == ["semantic", "geometric"] and saved["task_weights"] == [1.0, 0.5]
    report = tmp_path / "metrics.json"
    assert main(["eval", str(out / "best.pt"), "--data", "synthetic-twotask", "--num-images",
                 "3", "--json", str(report), "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "task semantic:" in table and "task geometric:" in table
    assert table.count("mean IU") == 2 and "thin" in table and "wire" in table
    scores = json.loads(report.read_text())
    assert scores["tasks"]["geometric"]["class_names"] == list(GEOMETRIC_CLASSES)
    assert scores["mean_iou"] == scores["tasks"]["semantic"]["mean_iou"]
    # A two-headed model on data with one labelling: one line saying what it was trained on.
    assert main(["eval", str(out / "best.pt"), "--num-images", "2", "--device", "cpu"]) == 1
    assert "trained on --data synthetic-twotask" in capsys.readouterr().err
