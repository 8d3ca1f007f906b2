"""PGD-L2 (Madry et al., 2018): steps along the normalised gradient, projected back onto the L2 eps-ball."""

from __future__ import annotations

import torch
from torch import nn

from dla.attacks.common import (
    Goal,
    Variant,
    attack_mode,
    check_alpha,
    check_count,
    check_eps,
    check_images,
    input_gradient,
    make_goal,
)
from dla.attacks.l2 import l2_norms, project_l2
from dla.attacks.registry import register_attack

TINY = 1e-10  # torchattacks.PGDL2's guard against a zero gradient


@register_attack("pgd-l2", "projected gradient descent, L2 (Madry et al. 2018): random start, normalised steps",
                 norm="l2")
def pgd_l2(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    eps: float,
    alpha: float | None = None,
    steps: int = 10,
    *,
    random_start: bool = True,
    targeted: bool = False,
    target: torch.Tensor | int | None = None,
    variant: Variant = "standard",
    least_likely: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`steps` steps x <- Proj_{||x' - x0||_2 <= eps, [0, 1]}(x + alpha * g / ||g||_2), g = grad_x L, per image.

    x: images (B, C, H, W) in [0, 1]; y: true labels (B,); eps and alpha are L2 lengths per image in pixel units;
    `alpha=None` is 2.5 * eps / steps. Losses and targets as in `dla.attacks.pgd`. The random start is torchattacks':
    a Gaussian direction scaled to a length uniform in [0, eps], drawn with `generator` (None: the global RNG,
    `normal_` then `uniform_`, as torchattacks draws them). Returns a detached tensor like x with
    ||x_adv - x||_2 <= eps per image; eps = 0 returns a copy of x.
    """
    x, eps = check_images(x), check_eps(eps)
    steps = check_count(steps, "steps", 0)
    alpha = 2.5 * eps / max(steps, 1) if alpha is None else check_alpha(alpha)
    with attack_mode(model):
        goal = make_goal(model, x, y, targeted=targeted, target=target, variant=variant, least_likely=least_likely)
        if eps == 0 or x.shape[0] == 0:
            return x.clone()
        x_adv = _random_start(x, eps, generator) if random_start else x.clone()
        for _ in range(steps):
            x_adv = _step(model, x, x_adv, goal, eps, alpha)
        return project_l2(x_adv, x, eps)


def _random_start(x: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    rows = (-1, *[1] * (x.ndim - 1))
    delta = torch.empty_like(x).normal_(generator=generator)  # (B, C, H, W)
    n = l2_norms(delta).view(rows)
    r = torch.zeros_like(n).uniform_(0, 1, generator=generator)  # (B, 1, 1, 1) the start's length / eps
    return (x + delta * (r / n * eps)).clamp(0.0, 1.0)


def _step(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, goal: Goal, eps: float,
          alpha: float) -> torch.Tensor:
    g = input_gradient(model, x_adv, goal)  # (B, C, H, W), of the summed objective: each image's own gradient
    g = g / (l2_norms(g) + TINY).view(-1, *[1] * (x.ndim - 1))
    return project_l2(x_adv + alpha * g, x, eps)
