"""APGD (Croce & Hein, 2020): step-size-free PGD-L_inf with momentum, the gradient attack of AutoAttack.

One run starts at a random corner-ish point of the ball, steps with momentum 0.75 and a per-example step size
(2 * eps at first) that halves at checkpoints where the loss rose on too few of the last steps, or where it did
not improve since the previous checkpoint; a halving also restarts from the best point so far. Two registered
attacks use it: "apgd-ce" (cross-entropy; targeted too, with the losses of `dla.attacks.common`) and "apgd-dlr"
(the difference-of-logits ratio, invariant to shifting and scaling the logits). "apgd-t" is in `apgd_t`.

Seeded: the random starts come from a private `torch.Generator(seed)`, the draws torchattacks makes from the
global RNG after `torch.manual_seed(seed)`, so the two give the same examples without touching the global state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from dla.attacks.common import (
    AttackError,
    Goal,
    Variant,
    attack_mode,
    check_count,
    check_eps,
    check_images,
    logits_of,
    make_goal,
    project,
)
from dla.attacks.registry import register_attack

LossFn = Callable[[torch.Tensor], torch.Tensor]  # logits (b, K) -> (b,) the loss each example ascends
Success = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits (b, K), index (b,)) -> (b,) bool


def dlr_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(b,) -(z_y - max_{k != y} z_k) / (z_(1) - z_(3)): a margin, divided by the spread of the top 3 logits."""
    z_sorted = z.sort(dim=1).values  # ascending, so z_(1) is the last column
    z_y = z.gather(1, y[:, None])[:, 0]
    top_is_y = z.argmax(dim=1) == y
    other = torch.where(top_is_y, z_sorted[:, -2], z_sorted[:, -1])  # the best wrong logit
    return -(z_y - other) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


@dataclass
class RunResult:
    """One APGD run on b examples."""

    best: torch.Tensor  # (b, C, H, W) the highest-loss iterate
    loss: torch.Tensor  # (b,) its loss
    fooled: torch.Tensor  # (b,) bool: some iterate succeeded
    adv: torch.Tensor  # (b, C, H, W) the last successful iterate (meaningful where fooled)


def _loss_grad(model: nn.Module, x_adv: torch.Tensor, loss_fn: LossFn) -> tuple[torch.Tensor, ...]:
    """(loss (b,), d sum(loss) / d x_adv (b, C, H, W), logits (b, K)) at x_adv."""
    with torch.enable_grad():
        x_req = x_adv.clone().requires_grad_(True)
        z = logits_of(model, x_req)
        loss = loss_fn(z)
        (grad,) = torch.autograd.grad(loss.sum(), x_req)
    return loss.detach(), grad, z.detach()


def _start(x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """x + eps * t / ||t||_inf with t ~ U(-1, 1) per pixel: a random point on the ball's surface, clamped."""
    t = 2 * torch.rand(x.shape, generator=generator) - 1  # float32 on the CPU, the reference's draw
    t = t.to(x.device)
    offset = eps * t / t.flatten(1).abs().amax(dim=1).view(-1, *[1] * (x.ndim - 1))
    return (x + offset).clamp(0.0, 1.0)


def _ball(v: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.minimum(torch.maximum(v, x - eps), x + eps).clamp(0.0, 1.0)


def _oscillating(history: torch.Tensor, i: int, k: int, rho: float) -> torch.Tensor:
    """(b,) the loss rose on at most rho * k of the last k steps. As in the reference code, the step before the
    first reads the history's unwritten last row (zeros) through Python's index -1."""
    rises = sum((history[i - c] > history[i - c - 1]).to(torch.int64) for c in range(k))
    return rises <= k * rho


def _schedule(steps: int) -> tuple[int, int, int]:
    """(first checkpoint interval, smallest interval, shrink per checkpoint): 22%, 6% and 3% of the steps."""
    return max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)


def apgd_run(model: nn.Module, x: torch.Tensor, loss_fn: LossFn, success: Callable[[torch.Tensor], torch.Tensor],
             eps: float, steps: int, rho: float, generator: torch.Generator) -> RunResult:
    """One APGD-L_inf run from a random start on x (b, C, H, W); the model already in `attack_mode`."""
    b, rows = x.shape[0], (-1, *[1] * (x.ndim - 1))
    x_adv = _start(x, eps, generator)
    loss, grad, z = _loss_grad(model, x_adv, loss_fn)
    best, best_loss, best_grad = x_adv.clone(), loss.clone(), grad.clone()
    fooled, adv = success(z), x_adv.clone()
    step = torch.full((b,), 2.0 * eps, dtype=x.dtype, device=x.device)  # (b,) per-example step size
    history = torch.zeros(steps, b, dtype=loss.dtype, device=x.device)  # the loss after each step
    k, k_min, k_decr = _schedule(steps)
    since_check, reduced = 0, torch.ones(b, dtype=torch.bool, device=x.device)
    loss_at_check, x_old = best_loss.clone(), x_adv.clone()
    for i in range(steps):
        momentum, x_old = x_adv - x_old, x_adv
        a = 0.75 if i > 0 else 1.0
        x1 = _ball(x_adv + step.view(rows) * grad.sign(), x, eps)
        x_adv = _ball(x_adv + (x1 - x_adv) * a + momentum * (1 - a), x, eps)
        loss, grad, z = _loss_grad(model, x_adv, loss_fn)
        now = success(z)  # (b,)
        fooled, adv = fooled | now, torch.where(now.view(rows), x_adv, adv)
        better = loss > best_loss
        best = torch.where(better.view(rows), x_adv, best)
        best_grad = torch.where(better.view(rows), grad, best_grad)
        best_loss = torch.where(better, loss, best_loss)
        history[i] = loss
        since_check += 1
        if since_check == k:
            cut = _oscillating(history, i, k, rho) | (~reduced & (loss_at_check >= best_loss))  # (b,)
            reduced, loss_at_check = cut, best_loss.clone()
            step = torch.where(cut, step / 2.0, step)
            x_adv = torch.where(cut.view(rows), best, x_adv)  # start again from the best point, at half the step
            grad = torch.where(cut.view(rows), best_grad, grad)
            since_check, k = 0, max(k - k_decr, k_min)
    return RunResult(best, best_loss, fooled, adv)


@dataclass
class Pursuit:
    """Per example, what the runs so far found: the output and whether it succeeds."""

    out: torch.Tensor  # (B, C, H, W)
    done: torch.Tensor  # (B,) bool: succeeded (clean or under attack)
    loss: torch.Tensor  # (B,) the loss of `out` where not done (-inf before any run)

    def absorb(self, idx: torch.Tensor, r: RunResult) -> None:
        """Merge a run on the examples idx (b,): a success is kept for good; otherwise the higher loss wins."""
        rows = (-1, *[1] * (self.out.ndim - 1))
        higher = ~r.fooled & (r.loss > self.loss[idx])
        pick = torch.where(r.fooled.view(rows), r.adv, r.best)
        take = r.fooled | higher
        self.out[idx] = torch.where(take.view(rows), pick, self.out[idx])
        self.loss[idx] = torch.where(higher, r.loss, self.loss[idx])
        self.done[idx] = self.done[idx] | r.fooled


def pursue(model: nn.Module, x: torch.Tensor, eps: float, runs: Iterable[Callable[[torch.Tensor], LossFn]],
           success: Success, steps: int, rho: float, seed: int) -> torch.Tensor:
    """Each of `runs` (a loss per subset of example indices) on the examples not yet fooled, as AutoAttack does.

    Examples that succeed already on the clean image are returned unchanged; each run then attacks the rest,
    drawing its start from one generator seeded once, so the draws follow the subsets as the reference's do.
    """
    with torch.no_grad():
        done = success(logits_of(model, x), torch.arange(x.shape[0], device=x.device))
    p = Pursuit(x.clone(), done, torch.full((x.shape[0],), -float("inf"), dtype=x.dtype, device=x.device))
    generator = torch.Generator().manual_seed(seed)
    for make_loss in runs:
        idx = (~p.done).nonzero()[:, 0]  # (b,)
        if idx.numel() == 0:
            break
        r = apgd_run(model, x[idx], make_loss(idx), lambda z, idx=idx: success(z, idx), eps, steps, rho, generator)
        p.absorb(idx, r)
    return project(p.out, x, eps)


def check_apgd(x: torch.Tensor, eps: float, steps: int, restarts: int, rho: float, seed: int) -> tuple:
    """The checked (x, eps, steps, restarts, rho, seed) shared by the APGD attacks."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise AttackError(f"seed must be an integer; got {seed!r}")
    if isinstance(rho, bool) or not isinstance(rho, int | float) or not 0 < rho < 1:
        raise AttackError(f"rho must be a number in (0, 1); got {rho!r}")
    return (check_images(x), check_eps(eps), check_count(steps, "steps", 1), check_count(restarts, "restarts", 1),
            float(rho), seed)


def _untargeted(goal: Goal) -> Success:
    return lambda z, idx: z.argmax(dim=1) != goal.y[idx]


@register_attack("apgd-ce", "auto-PGD, L_inf, cross-entropy (Croce & Hein 2020): momentum, adaptive step, restarts")
def apgd_ce(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    eps: float,
    steps: int = 100,
    *,
    restarts: int = 1,
    rho: float = 0.75,
    seed: int = 0,
    targeted: bool = False,
    target: torch.Tensor | int | None = None,
    variant: Variant = "standard",
    least_likely: bool = False,
) -> torch.Tensor:
    """APGD on the cross-entropy (untargeted), or on a targeted loss of `dla.attacks.common` toward `target`.

    x: images (B, C, H, W) in [0, 1]; y: true labels (B,); eps in pixel units. `restarts` runs, each on the examples
    not yet fooled, each from a fresh random start; `rho` is the checkpoint's fraction of loss increases below
    which the step halves. Per example the result is: the clean image if it already succeeds (misclassified, or
    classified as the target); else the last successful iterate of the first run that succeeded; else the
    highest-loss iterate of all runs (torchattacks returns the clean image there: the robust accuracy is the same).
    Returns a detached tensor like x with ||x_adv - x||_inf <= eps; eps = 0 returns a copy of x.
    """
    x, eps, steps, restarts, rho, seed = check_apgd(x, eps, steps, restarts, rho, seed)
    with attack_mode(model):
        goal = make_goal(model, x, y, targeted=targeted, target=target, variant=variant, least_likely=least_likely)
        if eps == 0 or x.shape[0] == 0:
            return x.clone()
        if goal.targeted:
            def success(z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
                return z.argmax(dim=1) == goal.target[idx]
        else:
            success = _untargeted(goal)

        def runs(idx: torch.Tensor) -> LossFn:
            sub = Goal(goal.y[idx] if goal.y is not None else None,
                       goal.target[idx] if goal.target is not None else None, goal.variant)
            return sub.objective

        return pursue(model, x, eps, [runs] * restarts, success, steps, rho, seed)


@register_attack("apgd-dlr", "auto-PGD, L_inf, difference-of-logits-ratio loss (Croce & Hein 2020)", targeted=False)
def apgd_dlr(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    eps: float,
    steps: int = 100,
    *,
    restarts: int = 1,
    rho: float = 0.75,
    seed: int = 0,
) -> torch.Tensor:
    """APGD on the DLR loss (`dlr_loss`, needs at least 3 classes), untargeted; otherwise as `apgd_ce`.

    DLR does not change when the logits are shifted or scaled, so a model that saturates its softmax (where
    cross-entropy gradients vanish) does not hide from it.
    """
    x, eps, steps, restarts, rho, seed = check_apgd(x, eps, steps, restarts, rho, seed)
    with attack_mode(model):
        goal = make_goal(model, x, y, targeted=False, target=None, variant="standard", least_likely=False)
        if eps == 0 or x.shape[0] == 0:
            return x.clone()
        check_classes(model, x[:1], goal, 3, "apgd-dlr")

        def runs(idx: torch.Tensor) -> LossFn:
            return lambda z: dlr_loss(z, goal.y[idx])

        return pursue(model, x, eps, [runs] * restarts, _untargeted(goal), steps, rho, seed)


def check_classes(model: nn.Module, x1: torch.Tensor, goal: Goal, least: int, name: str) -> int:
    """The model's number of classes K after checking the labels against it and K >= least; one forward pass."""
    with torch.no_grad():
        k = logits_of(model, x1).shape[1]
    goal.check_classes(k)
    if k < least:
        raise AttackError(f"{name} needs a model with at least {least} classes; this one has {k}")
    return k
