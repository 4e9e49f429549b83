import pytest

from fcn_edge.config import ModelConfig, TrainConfig
from fcn_edge.errors import InputError
from fcn_edge.models import build
from fcn_edge.train.optim import make_optimizer, make_scheduler


def _model():
    return build(ModelConfig("fcn8s", num_classes=3, backbone="resnet18"))


def test_biases_get_twice_the_rate_and_no_decay_frozen_upsampling_is_left_out():
    model = _model()
    opt = make_optimizer(model, TrainConfig(lr=0.01))
    weights, biases = opt.param_groups
    assert weights["lr"] == 0.01 and weights["weight_decay"] == 5e-4
    assert biases["lr"] == 0.02 and biases["weight_decay"] == 0.0
    assert weights["momentum"] == 0.9
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(model.score_fr.bias) in {id(p) for p in biases["params"]}
    assert id(model.upscore8.weight) not in in_opt  # fixed bilinear kernel (§3.3)
    assert len(in_opt) == sum(1 for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("backbone,recipe,lr,momentum", [
    ("vgg16", "paper", 1e-4, 0.9), ("alexnet", "paper", 1e-3, 0.9),
    ("resnet18", "paper", 1e-2, 0.9), ("vgg16", "heavy", 1e-10, 0.99),
])
def test_recipe_defaults(backbone, recipe, lr, momentum):
    cfg = TrainConfig(model=ModelConfig(backbone=backbone), recipe=recipe)
    assert cfg.effective_lr == lr and cfg.effective_momentum == momentum


def test_heavy_recipe_is_batch_one():
    with pytest.raises(InputError, match="batch_size=1"):
        TrainConfig(recipe="heavy", batch_size=4)


def test_poly_schedule_decays_to_zero_and_fixed_stays():
    model = _model()
    for schedule, last in (("fixed", 1.0), ("poly", 0.0)):
        cfg = TrainConfig(lr=1.0, schedule=schedule, epochs=2)
        opt = make_optimizer(model, cfg)
        sched = make_scheduler(opt, cfg, steps_per_epoch=5)
        rates = []
        for _ in range(10):
            opt.step()
            sched.step()
            rates.append(sched.get_last_lr()[0])
        assert rates[-1] == pytest.approx(last)
        assert rates == sorted(rates, reverse=True)


def test_train_config_round_trips_through_json_types():
    import json

    cfg = TrainConfig(scale=(0.5, 2.0), crop=(128, 128), class_weights=(1.0, 2.0, 3.0))
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize("backbone, lr", [("resnet18", 1e-3), ("googlenet", 1e-3),
                                          ("mobilenet_v3_large", 5e-3),
                                          ("mobilenet_v3_small", 5e-3)])
def test_adamw_option_keeps_the_parameter_groups(backbone, lr):
    """AdamW runs at the backbone's rate: the MobileNets learn nothing in a short run at the
    others' 10⁻³ (registry.py)."""
    from fcn_edge.models import create_model

    config = TrainConfig(model=ModelConfig(name="fcn32s", backbone=backbone),
                         optimizer="adamw")
    assert config.effective_lr == lr
    assert TrainConfig(model=ModelConfig(backbone=backbone), optimizer="adamw",
                       lr=0.02).effective_lr == 0.02
    model = create_model("fcn32s", num_classes=3, backbone=backbone)
    optimizer = make_optimizer(model, config)
    assert type(optimizer).__name__ == "AdamW"
    assert [g["lr"] for g in optimizer.param_groups] == [lr, 2 * lr]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [5e-4, 0.0]


def test_optimizer_and_difficulty_are_checked():
    import pytest

    from fcn_edge.config import TrainConfig
    from fcn_edge.errors import InputError

    for bad in (dict(optimizer="adam"), dict(difficulty="easy"),
                dict(recipe="heavy", optimizer="adamw")):
        with pytest.raises(InputError):
            TrainConfig(**bad)
