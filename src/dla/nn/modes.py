"""Borrowing a model: eval mode and frozen weights for the length of an attack, a score or an explanation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


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
