"""PGD-Linf (Madry et al., 2018): FGSM iterated with step alpha, projected back onto the eps-ball after each step."""

from __future__ import annotations

import torch
from torch import nn

from dla.attacks.common import (
    AttackError,
    Goal,
    Variant,
    attack_mode,
    check_alpha,
    check_eps,
    check_images,
    input_gradient,
    logits_of,
    make_goal,
    project,
)
from dla.attacks.registry import register_attack


@register_attack("pgd", "projected gradient descent, L_inf (Madry et al. 2018): random start, signed steps, restarts")
def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    eps: float,
    alpha: float | None = None,
    steps: int = 10,
    *,
    random_start: bool = True,
    restarts: int = 1,
    targeted: bool = False,
    target: torch.Tensor | int | None = None,
    variant: Variant = "standard",
    least_likely: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`steps` steps x <- Proj_{B_eps(x0) ∩ [0,1]}(x + alpha * sign(grad_x L(x))), from x0 or a uniform random start.

    x: images (B, C, H, W) in [0, 1]; y: true labels (B,); eps and alpha in pixel units. `alpha=None` uses Madry et
    al.'s rule alpha = 2.5 * eps / steps (enough to reach the boundary of the ball from anywhere inside it).
    L, `targeted`, `target`, `variant` and `least_likely` are as in `fgsm` (see `dla.attacks.common`).

    Random start: x0 + U(-eps, eps) per pixel, clamped to [0, 1], drawn with `generator`; with `generator=None` the
    draw is `torch.empty_like(x).uniform_(-eps, eps)` on the global RNG, exactly torchattacks.PGD's, so the two
    agree after the same `torch.manual_seed`. Each step is torchattacks' too: delta = clamp(x + alpha * sign(g) - x0,
    -eps, eps), x = clamp(x0 + delta, 0, 1).

    Restarts (each from a fresh random start, so `restarts > 1` needs `random_start=True`) keep, per example, the
    final iterate of the best restart: one that succeeds (misclassified; classified as the target when targeted)
    beats one that does not, and among equals the higher objective L wins (highest loss untargeted, lowest target
    loss for "standard"); ties keep the earlier restart. Success first means extra restarts can never raise robust
    accuracy or lower targeted success, which a highest-loss rule alone does not guarantee (a misclassifying iterate
    can have a lower cross-entropy than a correctly classified, low-confidence one).

    Returns a detached tensor like x with ||x_adv - x||_inf <= eps; eps = 0 returns a copy of x. The model runs in
    eval mode with frozen parameters and is restored afterwards; x, y and target are not modified.
    """
    x = check_images(x)
    eps = check_eps(eps)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise AttackError(f"steps must be an integer >= 0; got {steps!r}")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise AttackError(f"restarts must be an integer >= 1; got {restarts!r}")
    if restarts > 1 and not random_start:
        raise AttackError(f"restarts={restarts} needs random_start=True: without it every restart is the same run")
    alpha = 2.5 * eps / max(steps, 1) if alpha is None else check_alpha(alpha)
    with attack_mode(model):
        goal = make_goal(model, x, y, targeted=targeted, target=target, variant=variant, least_likely=least_likely)
        if eps == 0 or x.shape[0] == 0:
            return x.clone()
        best = best_ok = best_obj = None
        for _ in range(restarts):
            x_adv = _run(model, x, goal, eps, alpha, steps, random_start, generator)  # (B, C, H, W)
            if restarts == 1:
                return project(x_adv, x, eps)
            with torch.no_grad():
                z = logits_of(model, x_adv)
                ok, obj = goal.success(z), goal.objective(z)  # (B,) each
            if best is None:
                best, best_ok, best_obj = x_adv, ok, obj
                continue
            better = (ok & ~best_ok) | ((ok == best_ok) & (obj > best_obj))  # (B,)
            best = torch.where(better.view(-1, *[1] * (x.ndim - 1)), x_adv, best)
            best_ok, best_obj = torch.where(better, ok, best_ok), torch.where(better, obj, best_obj)
        return project(best, x, eps)


def _run(
    model: nn.Module,
    x: torch.Tensor,
    goal: Goal,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One PGD run from x (or a random start near it); the final iterate."""
    x_adv = x.clone()
    if random_start:
        noise = torch.empty_like(x).uniform_(-eps, eps, generator=generator)
        x_adv = (x_adv + noise).clamp(0.0, 1.0)
    for _ in range(steps):
        x_adv = x_adv + alpha * input_gradient(model, x_adv, goal).sign()
        delta = (x_adv - x).clamp(-eps, eps)
        x_adv = (x + delta).clamp(0.0, 1.0)
    return x_adv
