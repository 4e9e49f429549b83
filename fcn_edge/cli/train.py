"""``fcn-edge train`` and ``fcn-edge eval``: parsed into TrainConfig / EvalConfig."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from ..config import (DIFFICULTIES, FUSIONS, MODEL_LAYOUTS, MODEL_NAMES, OPTIMIZERS, RECIPES,
                      SCHEDULES, EvalConfig, TrainConfig)
from ..io import check_writable
from ..models.registry import backbone_names
from .args import DATA_LAYOUTS, add_bounded, config_from_args
from .model_arg import CHECKPOINT, add_model_argument, resolve_model


def cmd_train(args: argparse.Namespace) -> int:
    from ..train import train

    out_dir = args.out_dir or (str(Path(args.resume).parent) if args.resume else "runs/train")
    check_writable(out_dir, "--out", folder=True)  # refused before a download, not after it
    resolve_model(args)  # --init-from NAME (with --weights FILE: its file, given locally)
    # Resuming continues the saved run: its epochs unless --epochs extends them, its folder.
    resume = args.resume
    config = config_from_args(
        TrainConfig, args, model=config_from_args(TrainConfig.model, args),
        epochs=args.epochs if args.epochs is not None else (1 if resume else 10),
        out_dir=out_dir)
    result = train(config, progress=not args.quiet)
    if result.best_path is not None:
        print(f"best mean IU {result.best_miou:.4f}: {result.best_path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..io import atomic_path
    from ..train.evaluation import evaluate_checkpoint_tasks

    config = config_from_args(EvalConfig, args)
    if args.json:  # refused before the evaluation, not after it
        check_writable(args.json, "--json")
    if config.predictions_dir:
        check_writable(config.predictions_dir, "--save-predictions", folder=True)
    if resolve_model(args):  # a zoo name: its checkpoint, prepared once the flags are good
        config = replace(config, checkpoint=args.checkpoint)
    results = evaluate_checkpoint_tasks(config)
    (metrics, classes), *others = results.values()
    for i, (task, (m, names)) in enumerate(results.items()):  # a table per task (Table 5)
        if others:
            print(("\n" if i else "") + f"task {task}:")
        print(m.format_table(names))
    if args.json:  # the first head's metrics at the top, every head's under "tasks"
        report = metrics.to_dict(classes)
        if others:
            report["tasks"] = {t: m.to_dict(n) for t, (m, n) in results.items()}
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
    return 0


def _add_data_arguments(p: argparse.ArgumentParser, config: type) -> None:
    # No defaults here or below where the config has one: a flag left out keeps its field's.
    p.add_argument("--data", help="'synthetic' (procedural scenes), 'synthetic-rgbd' (with "
                                  "depth), 'synthetic-twotask' (semantic + geometric labels) "
                                  "or a data set folder (VOC, SBD, Cityscapes, NYUDv2, SIFT "
                                  "Flow or images/+masks/, detected)")
    p.add_argument("--data-layout", choices=DATA_LAYOUTS, metavar="LAYOUT",
                   help="override the detected layout: %(choices)s")
    add_bounded(p, "--num-images", config,
                help="synthetic scenes (train: 1000 training scenes; eval: 100 validation)")
    add_bounded(p, "--image-size", config, help="synthetic image HEIGHTxWIDTH (train: 256x256; "
                                                "eval: the checkpoint's training size)")
    p.add_argument("--difficulty", choices=DIFFICULTIES,
                   help="synthetic scenes: standard (default; eval: the checkpoint's) or hard")
    add_bounded(p, "--seed", config)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")


def add_parsers(sub) -> None:
    _add_train_parser(sub)
    p = sub.add_parser("eval", help="score a checkpoint with the paper's four metrics")
    add_model_argument(p, "checkpoint", needs=CHECKPOINT,
                       help="a checkpoint, or a zoo name (fcn-edge zoo lists them)")
    _add_data_arguments(p, EvalConfig)
    p.add_argument("--split")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.add_argument("--save-predictions", dest="predictions_dir", metavar="SAVE_PREDICTIONS",
                   help="write palette PNG predictions to this folder")
    p.set_defaults(func=cmd_eval)


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    """ModelConfig's flags (``--model`` sets its ``name``)."""
    p.add_argument("--model", dest="name", choices=MODEL_NAMES)
    p.add_argument("--backbone", choices=backbone_names())
    p.add_argument("--layout", choices=MODEL_LAYOUTS)
    p.add_argument("--learnable-upsampling", action="store_true")
    p.add_argument("--inputs", help="input modalities in channel order, e.g. rgb,depth or "
                                    "rgb,hha (default rgb; depth/hha need data that has them)")
    p.add_argument("--fusion", choices=FUSIONS,
                   help="early: one net over the stacked inputs; late: one stream per input, "
                        "scores summed (paper §5)")


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train an FCN and write deployable checkpoints",
                       description="Train an FCN (paper §4). Under torchrun, trains with DDP.")
    _add_data_arguments(p, TrainConfig)
    p.add_argument("--train-split")
    p.add_argument("--val-split")
    add_bounded(p, "--val-images", TrainConfig, help="synthetic validation images")
    _add_model_arguments(p)
    add_bounded(p, "--epochs", TrainConfig, help="default 10; with --resume, the saved run's")
    add_bounded(p, "--batch-size", TrainConfig, help="1 = whole-image training")
    p.add_argument("--recipe", choices=RECIPES,
                   help="paper: momentum 0.9, mean loss; heavy: momentum 0.99, summed loss")
    p.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="sgd (the paper's) or adamw (faster from scratch on short runs)")
    add_bounded(p, "--lr", TrainConfig, help="default: per backbone and recipe (adamw: 1e-3)")
    add_bounded(p, "--momentum", TrainConfig)
    add_bounded(p, "--weight-decay", TrainConfig)
    p.add_argument("--schedule", choices=SCHEDULES)
    add_bounded(p, "--class-weights", TrainConfig,
                help="comma-separated, one per class (of the first head's task)")
    p.add_argument("--tasks", help="multi-task data: comma-separated tasks to train, one "
                                   "head each, e.g. semantic,geometric (default: all; one "
                                   "task trains a plain FCN on its labels)")
    add_bounded(p, "--task-weights", TrainConfig,
                help="comma-separated loss weight per task, in --tasks order (default: 1 each)")
    add_bounded(p, "--loss-sample-p", TrainConfig,
                help="drop final-layer cells from the loss with this probability (§3.4)")
    p.add_argument("--no-mirror", dest="mirror", action="store_false")
    add_bounded(p, "--translate", TrainConfig, help="jitter up to N pixels (§4.3)")
    add_bounded(p, "--scale", TrainConfig, help="random scale range MIN,MAX, e.g. 0.5,2.0")
    add_bounded(p, "--crop", TrainConfig, help="random crop HEIGHTxWIDTH (padded batches)")
    p.add_argument("--weights", help="ImageNet classifier state dict to initialise the trunk; "
                                     "with a zoo name in --init-from: that name's published "
                                     "file, given locally (offline boxes)")
    add_model_argument(p, "--init-from", needs=CHECKPOINT, weights_dest="weights",
                       help="a coarser FCN checkpoint (staged 32s → 16s → 8s), or a zoo name "
                            "to fine-tune from")
    p.add_argument("--resume", help="a last.pt to continue exactly, with its saved settings "
                                    "(only --epochs and --out apply)")
    p.add_argument("--out", dest="out_dir", metavar="OUT",
                   help="output folder (default runs/train; with --resume, the checkpoint's "
                        "folder)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction,
                   help="mixed precision (default: on for CUDA)")
    add_bounded(p, "--threads", TrainConfig, help="CPU threads (default: cores / ranks)")
    add_bounded(p, "--workers", TrainConfig, help="data loader processes")
    add_bounded(p, "--max-steps", TrainConfig,
                help="stop each epoch after N steps (smoke runs; 0: no step, only the initial "
                     "model is validated and saved)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)
