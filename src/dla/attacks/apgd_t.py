"""APGD-T (Croce & Hein, 2020): APGD on the targeted DLR loss, toward each of the top wrong classes in turn.

Untargeted in what it reports: an example counts as broken when it is misclassified, whichever class it lands
in. The targets are the classes ranked 2nd, 3rd, ... by the clean logits (AutoAttack's "standard" version uses
9 of them on CIFAR-10); each target's runs attack only the examples that no earlier run has fooled.
"""

from __future__ import annotations

import torch
from torch import nn

from dla.attacks.apgd import LossFn, _untargeted, check_apgd, check_classes, pursue
from dla.attacks.common import attack_mode, check_count, logits_of, make_goal
from dla.attacks.registry import register_attack


def dlr_targeted_loss(z: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(b,) -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2): toward t, scaled by the spread of the top 4 logits."""
    z_sorted = z.sort(dim=1).values  # ascending
    margin = z.gather(1, y[:, None])[:, 0] - z.gather(1, t[:, None])[:, 0]
    return -margin / (z_sorted[:, -1] - 0.5 * z_sorted[:, -3] - 0.5 * z_sorted[:, -4] + 1e-12)


@register_attack("apgd-t", "auto-PGD, L_inf, targeted DLR toward each top wrong class in turn (Croce & Hein 2020)",
                 targeted=False)
def apgd_t(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    eps: float,
    steps: int = 100,
    *,
    targets: int = 9,
    restarts: int = 1,
    rho: float = 0.75,
    seed: int = 0,
) -> torch.Tensor:
    """APGD-T: for the classes ranked 2 ... targets + 1 by the clean logits, `restarts` targeted-DLR runs each.

    `targets` is capped at K - 1; the model needs at least 4 classes (the loss uses the 4th-largest logit).
    Otherwise as `dla.attacks.apgd.apgd_ce`: returns a detached tensor like x with ||x_adv - x||_inf <= eps.
    """
    x, eps, steps, restarts, rho, seed = check_apgd(x, eps, steps, restarts, rho, seed)
    targets = check_count(targets, "targets", 1)
    with attack_mode(model):
        goal = make_goal(model, x, y, targeted=False, target=None, variant="standard", least_likely=False)
        if eps == 0 or x.shape[0] == 0:
            return x.clone()
        k = check_classes(model, x[:1], goal, 4, "apgd-t")
        with torch.no_grad():
            ranked = logits_of(model, x).argsort(dim=1)  # (B, K) ascending: the last column is the prediction

        def toward(rank: int):
            def make(idx: torch.Tensor) -> LossFn:
                t = ranked[idx, -rank]  # (b,) the class ranked `rank` by the clean logits
                return lambda z: dlr_targeted_loss(z, goal.y[idx], t)
            return make

        runs = [toward(rank) for rank in range(2, min(targets, k - 1) + 2) for _ in range(restarts)]
        return pursue(model, x, eps, runs, _untargeted(goal), steps, rho, seed)
