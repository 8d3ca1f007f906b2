"""Optimizers and per-step learning-rate schedules (with linear warmup)."""

from __future__ import annotations

import math

import torch
from torch import nn

from dla.config import OptimConfig, ScheduleConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices and conv kernels only; biases and norm scales are left alone."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def lr_factor(step: int, cfg: ScheduleConfig, steps_per_epoch: int, epochs: int) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based)."""
    total = max(steps_per_epoch * epochs, 1)
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if cfg.name == "onecycle" and warmup == 0:
        warmup = int(0.3 * total)  # one-cycle's customary 30% ramp
    if step < warmup:
        return (step + 1) / warmup
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "step":
        return cfg.gamma ** (step // (cfg.step_epochs * steps_per_epoch))
    # cosine and onecycle: half a cosine from the peak down to min_lr_ratio over the rest.
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg, steps_per_epoch, epochs))
