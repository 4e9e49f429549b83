"""Multi-modal training (paper §5, NYUDv2): RGB-D early fusion (depth as a 4th channel) and
late fusion (an RGB and a depth stream, scores summed), on the procedural RGB-D scenes."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from fcn_edge.cli import main
from fcn_edge.config import ModelConfig, TrainConfig
from fcn_edge.data import open_dataset
from fcn_edge.data.nyud import hha_from_depth
from fcn_edge.errors import InputError
from fcn_edge.models import build, load_model, read_weights
from fcn_edge.models.fusion import LateFusionFCN
from fcn_edge.runtime.modalities import encode_depth, stack_inputs
from fcn_edge.train import evaluate_checkpoint, train
from fcn_edge.train.loader import AugmentedDataset
from fcn_edge.train.tasks import nyud_modality
from support import write_gray, write_rgb

RGBD = (("rgb", 3), ("depth", 1))
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def rgbd(tmp_path, fusion="early", **kw):
    base = dict(model=ModelConfig(name="fcn32s", backbone="resnet18", inputs=RGBD,
                                  fusion=fusion),
                data="synthetic-rgbd", num_images=8, val_images=3, image_size=(32, 32),
                epochs=1, batch_size=2, out_dir=str(tmp_path), threads=1, seed=2,
                optimizer="adamw")
    base.update(kw)
    return TrainConfig(**base)


def test_the_loader_stacks_depth_as_the_runtime_encodes_it():
    data = open_dataset("synthetic-rgbd", "train", num_images=2, size=(24, 32), seed=1)
    loader = AugmentedDataset(data, MEAN, STD, None, seed=0, inputs=("rgb", "depth"))
    x, y = loader[1]
    sample = data[1]
    expected = stack_inputs({"rgb": sample.image, "depth": sample.inputs["depth"]},
                            ("rgb", "depth"), MEAN, STD)[0]
    assert x.shape == (4, 24, 32) and np.array_equal(x.numpy(), expected)
    assert np.array_equal(x[3].numpy(), encode_depth(sample.inputs["depth"])[0, 0])
    assert np.array_equal(y.numpy(), sample.mask)


def test_early_fusion_trains_and_evaluates_on_rgbd(tmp_path):
    result = train(rgbd(tmp_path), progress=False)
    model = load_model(result.best_path)
    assert model.config.in_channels == 4 and model.config.input_names == ("rgb", "depth")
    assert model.meta.inputs == ("rgb", "depth")
    assert model.meta.dataset.spec == "synthetic-rgbd"
    metrics, _ = evaluate_checkpoint(result.best_path, "synthetic-rgbd", num_images=3, seed=2,
                                     device="cpu")
    assert metrics.mean_iou == pytest.approx(result.best_miou)
    # The same checkpoint on data without depth: the one-line error names where depth is.
    with pytest.raises(InputError, match="has no depth: depth comes with --data synthetic-rgbd"):
        evaluate_checkpoint(result.best_path, "synthetic", num_images=1, device="cpu")


def test_late_fusion_trains_both_streams(tmp_path):
    # No weight decay: the depth stream's weights move only if depth gives them a gradient.
    result = train(rgbd(tmp_path, fusion="late", optimizer="sgd", lr=0.01, weight_decay=0.0),
                   progress=False)
    model = load_model(result.best_path)
    assert isinstance(model, LateFusionFCN) and model.names == ("rgb", "depth")
    metrics, _ = evaluate_checkpoint(result.best_path, "synthetic-rgbd", num_images=3, seed=2,
                                     device="cpu")
    assert metrics.mean_iou == pytest.approx(result.best_miou)
    # Four steps: the depth stream's first convolution (1 input channel) learned from depth.
    trained = read_weights(result.last_path).state_dict
    torch.manual_seed(2)  # as the trainer does before it builds the model for 8 classes
    initial = build(replace(rgbd(tmp_path, fusion="late").model, num_classes=8)).state_dict()
    conv1 = [k for k in trained if k.startswith("streams.depth.") and "conv1" in k][0]
    assert trained[conv1].shape[1] == 1
    assert not torch.equal(trained[conv1], initial[conv1])


def test_a_missing_modality_stops_training_before_it_starts(tmp_path):
    with pytest.raises(InputError, match="synthetic-rgbd"):
        train(rgbd(tmp_path, data="synthetic"), progress=False)
    hha = ModelConfig(name="fcn32s", backbone="resnet18", inputs=(("rgb", 3), ("hha", 3)))
    with pytest.raises(InputError, match="hha comes with an NYUDv2 folder"):
        train(rgbd(tmp_path, model=hha, data="synthetic"), progress=False)
    assert not (tmp_path / "last.pt").exists()


def test_hha_is_computed_from_depth_where_the_data_has_only_depth(tmp_path):
    data = open_dataset("synthetic-rgbd", "train", num_images=2, size=(24, 32), seed=1)
    names = ("rgb", "hha")
    x, _ = AugmentedDataset(data, MEAN, STD, None, seed=0, inputs=names)[0]
    hha = hha_from_depth(data[0].inputs["depth"])
    assert np.array_equal(x.numpy(), stack_inputs({"rgb": data[0].image, "hha": hha}, names,
                                                  MEAN, STD)[0])
    # The paper's NYUDv2 net, RGB + HHA late fusion, then trains on the RGB-D stand-in.
    late = ModelConfig(name="fcn32s", backbone="resnet18", inputs=(("rgb", 3), ("hha", 3)),
                       fusion="late")
    result = train(rgbd(tmp_path, model=late), progress=False)
    assert load_model(result.best_path).names == ("rgb", "hha")


def test_nyudv2_is_read_with_the_modality_the_inputs_need():
    assert nyud_modality(("rgb",)) == "rgb"
    assert nyud_modality(("rgb", "depth")) == "rgbd"
    assert nyud_modality(("rgb", "hha")) == "rgb+hha"
    assert nyud_modality(("hha",)) == "hha"
    with pytest.raises(InputError, match="depth or HHA, not both"):
        nyud_modality(("rgb", "depth", "hha"))


def test_cli_trains_late_fusion_on_rgbd(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "synthetic-rgbd", "--inputs", "rgb,depth", "--fusion",
                 "late", "--num-images", "4", "--val-images", "2", "--image-size", "32x32",
                 "--model", "fcn32s", "--epochs", "1", "--batch-size", "2", "--threads", "1",
                 "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    assert load_model(out / "best.pt").config.fusion == "late"
    assert main(["train", "--inputs", "rgb,lidar", "--out", str(out)]) == 1
    assert "--inputs takes modalities from rgb, depth, hha" in capsys.readouterr().err


def _write_nyud(root, ids=("5001", "5002", "5003")) -> None:
    """A tiny NYUDv2 folder in the reference layout: RGB, uint16-mm depth, .mat labels."""
    savemat = pytest.importorskip("scipy.io").savemat
    for i, idx in enumerate(ids):
        rng = np.random.default_rng(i)
        name = f"img_{idx}"
        write_rgb(root / "data" / "images" / f"{name}.png",
                  rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
        depth = np.tile(np.linspace(1500, 3000, 48), (32, 1)).astype(np.uint16)
        write_gray(root / "data" / "depth" / f"{name}.png", depth + np.uint16(100 * i))
        (root / "segmentation").mkdir(parents=True, exist_ok=True)
        labels = np.kron(rng.integers(0, 41, (4, 4)), np.ones((8, 12))).astype(np.uint8)
        savemat(root / "segmentation" / f"{name}.mat", {"segmentation": labels})
    (root / "train.txt").write_text("\n".join(ids[:2]) + "\n")
    (root / "val.txt").write_text(ids[2] + "\n")


def test_an_nyudv2_folder_is_read_with_the_hha_the_model_takes(tmp_path):
    root = tmp_path / "nyud"
    _write_nyud(root)
    hha = ModelConfig(name="fcn32s", backbone="resnet18", inputs=(("rgb", 3), ("hha", 3)))
    result = train(rgbd(tmp_path / "run", model=hha, data=str(root), batch_size=1),
                   progress=False)
    model = load_model(result.best_path)
    assert model.config.num_classes == 40 and model.meta.inputs == ("rgb", "hha")
    metrics, classes = evaluate_checkpoint(result.best_path, str(root), device="cpu")
    assert len(classes) == 40 and metrics.mean_iou == pytest.approx(result.best_miou)
