"""SGD as the paper trains (§4.1): momentum, weight decay, biases at twice the learning rate.
AdamW (decoupled weight decay, same parameter groups) is the option for short runs from scratch.

Frozen parameters (the fixed bilinear upsampling, §3.3) are left out of the optimizer.
Biases get ``bias_lr_mult`` × the learning rate and no weight decay, as in the reference
solvers (``lr_mult: 2, decay_mult: 0`` on every bias).
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import TrainConfig


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    weights, biases = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (biases if name.endswith(".bias") or param.ndim == 1 else weights).append(param)
    lr = config.effective_lr
    groups = [
        {"params": weights, "lr": lr, "weight_decay": config.weight_decay},
        {"params": biases, "lr": lr * config.bias_lr_mult, "weight_decay": 0.0},
    ]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=config.effective_momentum)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """``fixed`` (the paper's) or ``poly``: lr × (1 − step/total)^0.9, stepped every batch."""
    total = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "fixed":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - step / total) ** 0.9)
