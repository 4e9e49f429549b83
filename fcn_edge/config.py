"""Frozen configuration dataclasses shared by models, training, export and the runtime.

A config is plain data (str/int/float/bool/tuple): it round-trips through JSON, so checkpoints
and exported artifacts carry it and can rebuild exactly the model they came from. Backbones are
checked against the registry (``models/registry.py``, importable without torch like this
module), so a registered backbone is valid everywhere at once.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Mapping

from .errors import InputError
from .models.registry import (MODEL_LAYOUTS, architecture_names, backbone_names,
                              find_architecture, get_backbone)
from .runtime.bounds import Bound, Many, Rule, Size, Threads, check_bounds
from .runtime.modalities import MODALITY_CHANNELS as _MODALITY_CHANNELS
from .runtime.processing import IMAGENET_MEAN, IMAGENET_STD

MODEL_NAMES = ("fcn32s", "fcn16s", "fcn8s")
FUSIONS = ("early", "late")
#: name → channels of the registered input modalities (paper §5, NYUDv2: the RGB image, depth
#: in metres, HHA as a 3-channel image, and any added with ``register_modality``): a live view
#: of ``fcn_edge.runtime.modalities.MODALITIES``, which encodes each one.
MODALITY_CHANNELS = _MODALITY_CHANNELS
#: ``in_channels`` → inputs, when a config names no inputs (``create_model(in_channels=4)``).
_DEFAULT_INPUTS = {c: tuple((name, MODALITY_CHANNELS[name]) for name in names) for c, names in
                   {3: ("rgb",), 4: ("rgb", "depth"), 6: ("rgb", "hha"), 1: ("depth",)}.items()}

# The ranges more than one config (and flag) shares. Sides stop at 16384 px, TensorRT's largest
# practical profile; seeds are what numpy's generators take (0 … 2³²−1).
IMAGE_SIZE = Size(Bound(1, 16384))
SEED = Bound(0, 2**32 - 1)
IMAGES = Bound(1, 1_000_000)
#: A probability that must leave something (dropout, loss sampling): 0 up to but not 1.
PROBABILITY = Bound(0.0, 1.0, integer=False, high_open=True)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild an FCN.

    Attributes:
        name: ``fcn32s``, ``fcn16s`` or ``fcn8s`` — the output stride of the finest skip (§4.2).
        num_classes: number of score channels (21 for PASCAL VOC: 20 classes + background).
        backbone: the classifier made fully convolutional (§3.1, §4.1): a registered backbone
            (``models/registry.py``: vgg16, alexnet, resnet18, mobilenet_v3_large,
            mobilenet_v3_small, googlenet).
        layout: ``edge`` (no 100-pixel input padding; cheaper, export-friendly) or ``reference``
            (layer-for-layer the released Caffe FCN-VGG16 nets, VGG16 only): one of
            ``MODEL_LAYOUTS`` that the backbone comes in.
        learnable_upsampling: train the bilinear deconvolutions (the reference keeps them fixed).
        fc_channels: width of fc6/fc7 (4096 in the paper; VGG16 and AlexNet only).
        dropout: dropout probability after fc6/fc7 in training (0.5 in the paper).
        in_channels: input channels (3 for RGB; 4 for RGB-D early fusion, paper §5).
        heads: for a multi-task model (paper §5, SIFT Flow), ``(task, classes)`` pairs, e.g.
            ``(("semantic", 33), ("geometric", 3))``: one trunk, one head per task; then
            ``num_classes`` is the first head's. Empty for one task.
        inputs: the input modalities as ``(name, channels)`` pairs in channel order, e.g.
            ``(("rgb", 3), ("depth", 1))`` (names from ``MODALITY_CHANNELS``). Left empty, they
            follow ``in_channels``: 3 → rgb, 4 → rgb + depth, 6 → rgb + hha, 1 → depth; given,
            they set ``in_channels`` to their sum.
        fusion: ``early`` (one net over the stacked channels) or ``late`` (one stream per input,
            their scores summed: the paper's RGB + HHA net, :class:`LateFusionFCN`).
        aux: for a published architecture (``name`` = ``fcn_resnet50`` …, below), whether it
            carries its auxiliary head on ``layer3`` (torchvision's published weights do).

    ``name`` may instead be a registered published architecture (``registry.py``:
    ``fcn_resnet18``/``34``, jetson-inference's; ``fcn_resnet50``/``101``, torchvision's), so
    their weights deploy like ours. Their layout is their source's: ``backbone`` is filled in
    from the record, and the skip nets' options (layout, fc width, learnable upsampling, extra
    inputs, heads, fusion) must stay at their defaults.
    """

    name: str = "fcn8s"
    num_classes: int = 21
    backbone: str = "vgg16"
    layout: str = "edge"
    learnable_upsampling: bool = False
    fc_channels: int = 4096
    dropout: float = 0.5
    in_channels: int = 3
    heads: tuple[tuple[str, int], ...] = ()
    inputs: tuple[tuple[str, int], ...] = ()
    fusion: str = "early"
    aux: bool = False

    BOUNDS: ClassVar[Mapping[str, Rule]] = {
        "num_classes": Bound(1, 10_000), "fc_channels": Bound(1, 65_536),
        "dropout": PROBABILITY}

    def __post_init__(self) -> None:
        if find_architecture(self.name) is not None:
            return self._check_architecture()
        if self.aux:
            raise InputError(f"aux is the auxiliary head of a published architecture "
                             f"({', '.join(architecture_names())}); {self.name} has none")
        heads = _check_heads(self.heads) if self.heads else ()
        object.__setattr__(self, "heads", heads)  # normalised to tuples: JSON gives lists
        if heads:
            object.__setattr__(self, "num_classes", heads[0][1])
        inputs = _check_inputs(self.inputs, self.in_channels)
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "in_channels", sum(c for _, c in inputs))
        _check_choice("fusion", self.fusion, FUSIONS)
        if self.fusion == "late" and (len(inputs) < 2 or heads):
            raise InputError(f"late fusion needs two or more inputs (one stream each) and one "
                             f"task; got inputs {[n for n, _ in inputs]} and heads "
                             f"{[n for n, _ in heads]}")
        _check_choice("model name", self.name, MODEL_NAMES + architecture_names())
        spec = get_backbone(self.backbone)
        _check_choice("layout", self.layout, MODEL_LAYOUTS)
        if self.layout not in spec.layouts:
            having = [b for b in backbone_names() if self.layout in get_backbone(b).layouts]
            raise InputError(f"layout '{self.layout}' exists only for {', '.join(having)}; use "
                             f"layout='edge' with backbone '{self.backbone}'")
        check_bounds(self, self.BOUNDS)
        if not spec.fc_layers and self.fc_channels != 4096:
            raise InputError(f"fc_channels sets the width of fc6/fc7, which {self.backbone} does "
                             f"not have; leave it at its default for {self.backbone}")

    def _check_architecture(self) -> None:
        """A published architecture: its own backbone, and the skip nets' options at their
        defaults (they mean nothing to it)."""
        spec = find_architecture(self.name)
        if self.backbone not in ("vgg16", spec.backbone):  # vgg16: the field's default
            raise InputError(f"{self.name} has a {spec.backbone} backbone, not "
                             f"{self.backbone!r}; leave backbone out")
        object.__setattr__(self, "backbone", spec.backbone)
        default = ModelConfig()
        # The one set of heads it may have: its own two, "out" and "aux" (an --aux export).
        heads = _check_heads(self.heads) if self.heads else ()
        both = (("out", self.num_classes), ("aux", self.num_classes))
        changed = [name for name in _SKIP_NET_OPTIONS if name != "heads"
                   and getattr(self, name) != getattr(default, name)] + \
            (["heads"] if heads and (heads != both or not self.aux) else [])
        inputs = _check_inputs(self.inputs, self.in_channels)
        if changed or inputs != (("rgb", 3),):
            what = ", ".join(changed) or "in_channels/inputs (it takes RGB)"
            raise InputError(f"{self.name} is a published architecture with its source's "
                             f"layout: {what} cannot be set on it")
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "heads", heads)
        check_bounds(self, self.BOUNDS)
        if not isinstance(self.aux, bool):
            raise InputError(f"aux must be true or false, got {self.aux!r}")

    @property
    def output_stride(self) -> int:
        """The stride of the finest prediction before the final upsampling (32, 16 or 8)."""
        spec = find_architecture(self.name)
        return spec.output_stride if spec is not None else int(self.name[3:-1])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (``heads`` as lists), identical after a JSON round trip."""
        data = asdict(self)
        data["heads"] = [list(pair) for pair in self.heads]
        data["inputs"] = [list(pair) for pair in self.inputs]
        return data

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.inputs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        """Rebuild from ``to_dict`` output; unknown keys are an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown model config keys {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


#: The options of the paper's skip nets that a published architecture leaves at their defaults.
_SKIP_NET_OPTIONS = ("layout", "learnable_upsampling", "fc_channels", "heads", "fusion")


def _check_heads(heads: Any) -> tuple[tuple[str, int], ...]:
    try:
        pairs = tuple((str(name), count) for name, count in heads)
    except (TypeError, ValueError):
        raise InputError(f"heads must be (task, classes) pairs, got {heads!r}") from None
    names = [name for name, _ in pairs]
    if len(pairs) < 2 or len(set(names)) != len(names):
        raise InputError(f"a multi-head model needs at least two distinctly named heads, got "
                         f"{names}; for one task use num_classes")
    for name, count in pairs:
        if not name.isidentifier() or not isinstance(count, int) or isinstance(count, bool) \
                or count < 1:
            raise InputError(f"heads maps task names (identifiers) to class counts ≥ 1, got "
                             f"{name!r}: {count!r}")
    return pairs


def _check_inputs(inputs: Any, in_channels: Any) -> tuple[tuple[str, int], ...]:
    if not inputs:
        if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
            raise InputError(f"in_channels must be an integer ≥ 1, got {in_channels!r}")
        if in_channels not in _DEFAULT_INPUTS:
            raise InputError(f"in_channels={in_channels} does not say which modalities the "
                             f"channels are; name them with inputs, e.g. "
                             f"inputs=(('rgb', 3), ('depth', 1)) (known: "
                             f"{', '.join(MODALITY_CHANNELS)})")
        return _DEFAULT_INPUTS[in_channels]
    try:
        pairs = tuple((str(name), count) for name, count in inputs)
    except (TypeError, ValueError):
        raise InputError(f"inputs must be (modality, channels) pairs, got {inputs!r}") from None
    names = [name for name, _ in pairs]
    for name, count in pairs:
        if MODALITY_CHANNELS.get(name) != count:
            raise InputError(f"input {name!r} with {count!r} channels is not a known modality; "
                             f"choose from {MODALITY_CHANNELS}")
    if len(set(names)) != len(names):
        raise InputError(f"inputs names each modality once, got {names}")
    total = sum(c for _, c in pairs)
    if in_channels not in (3, total):  # 3 is the default: the inputs then decide
        raise InputError(f"in_channels={in_channels} but the inputs {names} have {total} "
                         f"channels; give one or the other")
    return pairs


def _check_choice(what: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


RECIPES = ("paper", "heavy")
OPTIMIZERS = ("sgd", "adamw")
DIFFICULTIES = ("standard", "hard")
SCHEDULES = ("fixed", "poly")
#: The "paper" recipe's learning rate is the backbone's (``BackboneSpec.default_lr``, §4.1:
#: "fixed learning rates of 10⁻³ and 10⁻⁴ for FCN-AlexNet and FCN-VGG16"; per-pixel-averaged
#: loss). AdamW (not the paper's; an option for short CPU runs from scratch, where it converges
#: in fewer steps than SGD: see BENCHMARKS.md) runs at the backbone's ``adamw_lr``: 10⁻³ but
#: for the MobileNets, which need 5·10⁻³ (registry.py).
#: The reference implementation's "heavy" solver: unnormalised loss, batch 1, momentum 0.99.
HEAVY_LR = 1e-10


@dataclass(frozen=True)
class TrainConfig:
    """A training run: data, optimisation (paper §4.1–4.3) and bookkeeping.

    ``lr=None`` takes the recipe's default for the backbone. ``recipe="heavy"`` is the
    reference implementation's: momentum 0.99, loss summed over pixels, batch 1. The number of
    classes always comes from the data: ``model.num_classes`` is replaced by the data set's.

    Multi-task data (paper §5, SIFT Flow: ``tasks`` on the data set) trains one head per task
    in ``tasks`` (None: all the data's tasks); the primary task's head comes first and its mean
    IU picks ``best.pt``. One task trains a plain FCN on that task's labels. ``task_weights``
    (None: all 1) weight each task's pixel loss, in the order of ``tasks`` (of the heads when
    ``tasks`` is None); the loss is their weighted sum. ``model.inputs`` decides which
    modalities the loader stacks (paper §5, NYUDv2: rgb + depth, rgb + hha).
    """

    model: ModelConfig = ModelConfig(backbone="resnet18")
    data: str = "synthetic"
    data_layout: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    num_images: int = 1000          # synthetic data only
    val_images: int = 100           # synthetic data only
    image_size: tuple[int, int] = (256, 256)  # synthetic data only
    difficulty: str = "standard"    # synthetic data only: "standard" or "hard"
    epochs: int = 10
    batch_size: int = 1
    recipe: str = "paper"
    optimizer: str = "sgd"          # the paper's; "adamw" for short from-scratch runs
    lr: float | None = None
    momentum: float | None = None   # None: 0.9 (paper) or 0.99 (heavy)
    weight_decay: float = 5e-4
    bias_lr_mult: float = 2.0
    schedule: str = "fixed"
    class_weights: tuple[float, ...] | None = None  # the first (primary) head's classes
    tasks: tuple[str, ...] | None = None           # multi-task data: which tasks to train
    task_weights: tuple[float, ...] | None = None  # one loss weight per task
    loss_sample_p: float = 0.0      # §3.4: drop final-layer cells with probability p
    mirror: bool = True
    translate: int = 32             # §4.3: jitter by translation up to 32 px
    scale: tuple[float, float] | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights: str | None = None      # ImageNet classifier initialisation
    init_from: str | None = None    # staged training: a coarser FCN's checkpoint
    resume: str | None = None
    out_dir: str = "runs/train"
    device: str = "auto"
    amp: bool | None = None         # None: on for CUDA
    threads: int | None = None
    workers: int = 0
    seed: int = 0
    max_steps: int | None = None    # stop early (for smoke runs and tests)

    #: Each numeric field's range; the flags of the same name read their text with these.
    BOUNDS: ClassVar[Mapping[str, Rule]] = {
        "num_images": IMAGES, "val_images": IMAGES, "image_size": IMAGE_SIZE,
        "epochs": Bound(1, 100_000), "batch_size": Bound(1, 4096),
        "lr": Bound(0.0, 10.0, integer=False, low_open=True),
        "momentum": Bound(0.0, 1.0, integer=False, high_open=True),
        "weight_decay": Bound(0.0, 1.0, integer=False),
        "bias_lr_mult": Bound(0.0, 100.0, integer=False, low_open=True),
        "class_weights": Many(Bound(0.0, math.inf, integer=False)),
        "task_weights": Many(Bound(0.0, math.inf, integer=False)),
        "loss_sample_p": PROBABILITY, "translate": Bound(0, 4096),
        "scale": Many(Bound(0.0, 16.0, integer=False, low_open=True), count=2),
        "crop": IMAGE_SIZE, "threads": Threads(),
        "workers": Threads(zero="load data in the training process"),
        "seed": SEED,
        # 0 is no step, not "no limit" (None is): the initial model is validated and saved,
        # which checks an initialisation (staged training's init_from) without training.
        "max_steps": Bound(0, 1_000_000_000, zero="no training step; leave it out for no limit")}

    def __post_init__(self) -> None:
        _check_choice("recipe", self.recipe, RECIPES)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("difficulty", self.difficulty, DIFFICULTIES)
        if self.recipe == "heavy" and self.optimizer != "sgd":
            raise InputError("the heavy recipe is SGD with momentum 0.99: optimizer='sgd'")
        if self.recipe == "heavy" and self.batch_size != 1:
            raise InputError("the heavy recipe trains on one whole image at a time: batch_size=1")
        check_bounds(self, self.BOUNDS)
        if find_architecture(self.model.name) is not None:
            nets = ", ".join(MODEL_NAMES)
            raise InputError(f"fcn-edge train trains the paper's skip nets ({nets}); "
                             f"{self.model.name} is a published architecture that fcn-edge "
                             f"deploys (export, build, run, bench) but does not train")
        if self.scale is not None and self.scale[0] > self.scale[1]:
            raise InputError(f"scale is a range MIN,MAX with MIN ≤ MAX, got {self.scale}")
        if self.weights and self.init_from:
            raise InputError("give either weights (ImageNet initialisation) or init_from "
                             "(staged training), not both")
        _check_tasks(self.tasks, self.task_weights)

    @property
    def effective_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        if self.optimizer == "adamw":
            return get_backbone(self.model.backbone).adamw_lr
        if self.recipe == "heavy":
            return HEAVY_LR
        return get_backbone(self.model.backbone).default_lr

    @property
    def effective_momentum(self) -> float:
        if self.momentum is not None:
            return self.momentum
        return 0.99 if self.recipe == "heavy" else 0.9

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        data = dict(data)
        model = ModelConfig.from_dict(data.pop("model", {}))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown train config keys {unknown}")
        tuples = ("image_size", "scale", "crop", "mean", "std", "class_weights", "tasks",
                  "task_weights")
        data = {k: tuple(v) if k in tuples and v is not None else v for k, v in data.items()}
        return cls(model=model, **data)


@dataclass(frozen=True)
class EvalConfig:
    """What ``fcn-edge eval`` does: a checkpoint scored with the paper's metrics (§5).

    Procedural ``data`` ("synthetic", "synthetic-rgbd", "synthetic-twotask") is regenerated
    from ``seed``: ``num_images`` scenes of ``image_size`` (None: the checkpoint's training
    size) and ``difficulty`` (None: the checkpoint's) — the scenes its training run validated
    on when these match. A folder is read as ``data_layout`` (None: detected).
    ``predictions_dir`` receives each prediction as a palette PNG.
    """

    checkpoint: str
    data: str = "synthetic"
    data_layout: str | None = None
    split: str = "val"
    device: str = "auto"
    predictions_dir: str | None = None
    num_images: int = 100                       # synthetic data only
    image_size: tuple[int, int] | None = None   # synthetic data only
    seed: int = 0
    difficulty: str | None = None               # synthetic data only

    BOUNDS: ClassVar[Mapping[str, Rule]] = {
        "num_images": IMAGES, "image_size": IMAGE_SIZE, "seed": SEED}

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoint", str(self.checkpoint))
        if self.difficulty is not None:
            _check_choice("difficulty", self.difficulty, DIFFICULTIES)
        check_bounds(self, self.BOUNDS)


def _check_tasks(tasks: tuple[str, ...] | None, weights: tuple[float, ...] | None) -> None:
    """Task names are distinct identifiers; weights (each finite and ≥ 0 by ``BOUNDS``) are
    not all 0, one per task."""
    if tasks is not None:
        names = [tasks] if isinstance(tasks, str) else list(tasks)
        if isinstance(tasks, str) or not names or len(set(names)) != len(names) or \
                not all(isinstance(t, str) and t.isidentifier() for t in names):
            raise InputError(f"tasks must name each task once (identifiers such as semantic, "
                             f"geometric), got {tasks!r}")
    if weights is None:
        return
    if max(weights) == 0:
        raise InputError(f"task_weights must be ≥ 0 and not all 0 (one per head), got {weights!r}")
    if tasks is not None and len(weights) != len(tasks):
        raise InputError(f"task_weights has {len(weights)} values for the {len(tasks)} tasks "
                         f"{', '.join(tasks)}: give one weight per task, in the same order")
