"""Carlini-Wagner L2 (Carlini & Wagner, 2017): the smallest L2 change that flips the class, by Adam in tanh space.

The image is x' = (tanh(w) + 1) / 2, always in [0, 1]; Adam minimises ||x' - x||_2^2 + c * f(x') with the margin
f = max(z_y - max_{k != y} z_k, -kappa) (targeted: max(max_{k != t} z_k - z_t, -kappa)). CW has no radius of its
own: the attack returns, per image, the smallest adversarial image it found if that lies in the eps-ball, and
otherwise its last iterate projected onto the ball, so a robust accuracy at eps counts CW's successes within eps.
"""

from __future__ import annotations

import torch
from torch import nn

from dla.attacks.common import (
    Goal,
    attack_mode,
    check_count,
    check_eps,
    check_images,
    check_positive,
    logits_of,
    make_goal,
)
from dla.attacks.l2 import l2_norms, project_l2
from dla.attacks.registry import register_attack


def cw_margin(z: torch.Tensor, goal: Goal, kappa: float) -> torch.Tensor:
    """(B,) Carlini and Wagner's f: how far the image is from success, floored at -kappa (a confidence margin)."""
    goal.check_classes(z.shape[1])
    label = goal.target if goal.targeted else goal.y
    mine = z.gather(1, label[:, None])[:, 0]
    other = z.scatter(1, label[:, None], -float("inf")).amax(dim=1)  # the best of the other classes
    return (other - mine if goal.targeted else mine - other).clamp_min(-kappa)


def _tanh_space(w: torch.Tensor) -> torch.Tensor:
    return (torch.tanh(w) + 1) / 2


def _inverse_tanh_space(x: torch.Tensor) -> torch.Tensor:
    # atanh(2x - 1) written as torchattacks writes it: +-inf at pixels exactly 0 or 1, where tanh's gradient is 0.
    u = (x * 2 - 1).clamp(-1, 1)
    return 0.5 * torch.log((1 + u) / (1 - u))


@register_attack("cw-l2", "Carlini-Wagner L2 (2017): Adam on L2^2 + c * margin in tanh space, best within eps",
                 norm="l2")
def cw_l2(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    eps: float,
    steps: int = 50,
    *,
    c: float = 1.0,
    kappa: float = 0.0,
    lr: float = 0.01,
    targeted: bool = False,
    target: torch.Tensor | int | None = None,
    least_likely: bool = False,
) -> torch.Tensor:
    """CW-L2 with a fixed constant c (no binary search), `steps` Adam steps at learning rate `lr`.

    x: images (B, C, H, W) in [0, 1]; y: true labels (B,); eps is an L2 length per image. Every tenth of the
    steps, the run stops if the batch's total cost rose (the original code's early abort, and torchattacks').
    Returns a detached tensor like x with ||x_adv - x||_2 <= eps per image; eps = 0 returns a copy of x.
    """
    x, eps = check_images(x), check_eps(eps)
    steps = check_count(steps, "steps", 1)
    c, lr = check_positive(c, "c"), check_positive(lr, "lr")
    kappa = float(kappa) if kappa == 0 else check_positive(kappa, "kappa")
    with attack_mode(model):
        goal = make_goal(model, x, y, targeted=targeted, target=target, variant="standard",
                         least_likely=least_likely)
        if eps == 0 or x.shape[0] == 0:
            return x.clone()
        best, best_sq, last = _optimise(model, x, goal, steps, c, kappa, lr)
        inside = (best_sq < 1e10) & (l2_norms(best - x) <= eps)  # (B,) found, and within eps
        return torch.where(inside.view(-1, *[1] * (x.ndim - 1)), best, project_l2(last, x, eps)).detach()


def _optimise(model: nn.Module, x: torch.Tensor, goal: Goal, steps: int, c: float, kappa: float,
              lr: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(smallest successful image (B, C, H, W) or x, its squared L2 (1e10: none), the last iterate)."""
    rows = (-1, *[1] * (x.ndim - 1))
    w = _inverse_tanh_space(x).requires_grad_(True)
    best, best_sq = x.clone(), torch.full((x.shape[0],), 1e10, dtype=x.dtype, device=x.device)
    optimiser = torch.optim.Adam([w], lr=lr)
    prev_cost = 1e10
    for step in range(steps):
        with torch.enable_grad():
            adv = _tanh_space(w)
            sq = ((adv - x) ** 2).flatten(1).sum(dim=1)  # (B,) squared L2
            z = logits_of(model, adv)
            cost = sq.sum() + c * cw_margin(z, goal, kappa).sum()
            optimiser.zero_grad()
            cost.backward()
        optimiser.step()
        improved = goal.success(z.detach()) & (best_sq > sq.detach())  # (B,)
        best_sq = torch.where(improved, sq.detach(), best_sq)
        best = torch.where(improved.view(rows), adv.detach(), best)
        if step % max(steps // 10, 1) == 0:
            if cost.item() > prev_cost:
                break
            prev_cost = cost.item()
    return best, best_sq, _tanh_space(w.detach())
