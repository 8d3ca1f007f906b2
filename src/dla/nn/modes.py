"""Borrowing a model: eval mode and frozen weights for the length of an attack, a score or an explanation; and
BatchNorm modes for a training objective's extra forward passes (outlier exposure's auxiliary batch)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from dla.errors import DlaError


@contextmanager
def eval_frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters inside; every module's mode and every requires_grad flag restored after.

    Attacks, OOD scores and explanations need gradients with respect to the input only: freezing the weights
    keeps them from accumulating `.grad`, and eval mode keeps BatchNorm statistics and dropout out of it.
    Modes are restored per module, because a model may mix them (a frozen BatchNorm inside a training net).
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)


@contextmanager
def batchnorm_eval(model: nn.Module) -> Iterator[None]:
    """Every BatchNorm layer in eval mode inside (running statistics used, not updated); modes restored after."""
    norms = [(m, m.training) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m, _ in norms:
        m.eval()
    try:
        yield
    finally:
        for m, training in norms:
            m.train(training)


@contextmanager
def batchnorm_batch_stats(model: nn.Module) -> Iterator[None]:
    """Every BatchNorm in train mode normalises with the batch's own statistics inside, and leaves its running
    statistics and batch counter as they were (`track_running_stats` off); modes and flags restored after."""
    norms = [(m, m.training, m.track_running_stats) for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m, _, _ in norms:
        m.train()
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, training, track in norms:
            m.train(training)
            m.track_running_stats = track


def classifier_logits(model: nn.Module, x: torch.Tensor, error: type[DlaError], who: str) -> torch.Tensor:
    """model(x) checked to be (B, K) logits, in at least float32 (bf16/fp16 logits would round losses and
    softmax scores into ties); anything else is one `error` line naming what `who` needs."""
    z = model(x)
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[0] != x.shape[0]:
        got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise error(f"{who} need a classifier returning logits (B, K); the model returned {got}")
    return z if z.dtype in (torch.float32, torch.float64) else z.float()
