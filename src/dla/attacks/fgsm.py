"""FGSM (Goodfellow et al., 2015): one signed-gradient step of size eps, untargeted or toward a target class."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dla.attacks.common import (
    AttackError,
    Goal,
    Variant,
    attack_mode,
    check_eps,
    check_images,
    input_gradient,
    make_goal,
    step_along,
)
from dla.attacks.registry import register_attack


def _goal(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, loss: str, **kw: Any) -> Goal:
    """The objective FGSM ascends (`make_goal`), after checking the loss name."""
    if loss != "ce":
        raise AttackError(f"loss must be 'ce' (cross-entropy and its targeted variants); got {loss!r}")
    return make_goal(model, x, y, **kw)


def fgsm_direction(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    targeted: bool = False,
    target: torch.Tensor | int | None = None,
    variant: Variant = "standard",
    loss: str = "ce",
    least_likely: bool = False,
) -> torch.Tensor:
    """sign(grad_x L(x)), (B, C, H, W): FGSM's step at every eps, since the gradient at x does not depend on eps.

    `fgsm(model, x, y, eps, **kw)` is `project(x + eps * fgsm_direction(model, x, y, **kw), x, eps)` for eps > 0,
    bit for bit, so an eps table needs one backward pass per batch (`dla.attacks.evaluate_attack` uses this).
    """
    x = check_images(x)
    with attack_mode(model):
        goal = _goal(model, x, y, loss, targeted=targeted, target=target, variant=variant, least_likely=least_likely)
        if x.shape[0] == 0:
            return torch.zeros_like(x)
        return input_gradient(model, x, goal).sign()


@register_attack("fgsm", "fast gradient sign method (Goodfellow et al. 2015): one step of eps * sign(gradient)",
                 direction=fgsm_direction)
def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    eps: float,
    *,
    targeted: bool = False,
    target: torch.Tensor | int | None = None,
    variant: Variant = "standard",
    loss: str = "ce",
    least_likely: bool = False,
) -> torch.Tensor:
    """x_adv = clip_[0, 1](x + eps * sign(grad_x L(x))): the L_inf-bounded step that increases L most to first order.

    x: images (B, C, H, W) in [0, 1]; y: true labels (B,). eps is in pixel units (8/255 = 8 grey levels).
    L is cross-entropy (`loss="ce"`, the only loss so far): CE(y) untargeted; with `targeted=True, target=t` (an int
    or a (B,) tensor) one of the targeted variants of `dla.attacks.common` ("standard": decrease CE(t); "ovo": also
    increase CE(y); "ovr": also increase the mean CE of every class but t). `least_likely=True` targets each
    example's least-likely clean class (Kurakin et al.'s "step l.l."). A zero gradient leaves its pixel unmoved.

    Returns a detached tensor like x with ||x_adv - x||_inf <= eps; eps = 0 returns a copy of x. The model runs in
    eval mode with frozen parameters and is restored afterwards; x, y and target are not modified.
    """
    x = check_images(x)
    eps = check_eps(eps)
    if eps == 0:
        # The checks a real step would make (loss, target), then a copy: no gradient is needed.
        with attack_mode(model):
            _goal(model, x, y, loss, targeted=targeted, target=target, variant=variant, least_likely=least_likely)
        return x.clone()
    direction = fgsm_direction(model, x, y, targeted=targeted, target=target, variant=variant, loss=loss,
                               least_likely=least_likely)
    return step_along(x, direction, eps)

