"""DeepFool (Moosavi-Dezfooli et al., 2016): the L2 step to the nearest linearised decision boundary, repeated.

At the current image, each wrong class k has a linearised boundary f_k(x) = z_k - z_y = 0 at L2 distance
|f_k| / ||grad f_k||; DeepFool steps (1 + overshoot) times that distance toward the nearest one, until the image
is misclassified or the steps run out. Like CW it has no radius of its own: the result is projected onto the
eps-ball, so it counts as a success at eps only if DeepFool's perturbation was at most eps long.
"""

from __future__ import annotations

import torch
from torch import nn

from dla.attacks.common import (
    AttackError,
    attack_mode,
    check_count,
    check_eps,
    check_images,
    logits_of,
    make_goal,
)
from dla.attacks.l2 import project_l2
from dla.attacks.registry import register_attack


def _jacobian(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (b, K), their input Jacobian (b, K, C, H, W)): K backward passes, one per class, whole batch."""
    with torch.enable_grad():
        x_req = x.clone().requires_grad_(True)
        z = logits_of(model, x_req)
        rows = [torch.autograd.grad(z[:, k].sum(), x_req, retain_graph=k + 1 < z.shape[1])[0]
                for k in range(z.shape[1])]
    return z.detach(), torch.stack(rows, dim=1)


def _step(z: torch.Tensor, jac: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(b, C, H, W) the step to the nearest linearised boundary of a wrong class, from logits and Jacobian."""
    b, k = z.shape
    wrong = torch.ones(b, k, dtype=torch.bool, device=z.device).scatter(1, y[:, None], False)  # (b, K)
    f = (z - z.gather(1, y[:, None]))[wrong].view(b, k - 1)  # (b, K-1) z_k - z_y
    w = (jac - jac[torch.arange(b), y][:, None])[wrong].view(b, k - 1, *jac.shape[2:])  # (b, K-1, C, H, W)
    tiny = torch.finfo(w.dtype).tiny  # a flat direction (zero gradient) is never nearest and steps by 0
    norms = w.flatten(2).norm(p=2, dim=2)  # (b, K-1)
    nearest = (f.abs() / norms.clamp_min(tiny)).argmin(dim=1)  # (b,)
    idx = torch.arange(b)
    scale = f[idx, nearest].abs() / (norms[idx, nearest] ** 2).clamp_min(tiny)  # (b,)
    return scale.view(-1, *[1] * (w.ndim - 2)) * w[idx, nearest]


@register_attack("deepfool", "DeepFool, L2 (Moosavi-Dezfooli et al. 2016): steps to the nearest linear boundary",
                 targeted=False, norm="l2")
def deepfool(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    eps: float,
    steps: int = 50,
    *,
    overshoot: float = 0.02,
) -> torch.Tensor:
    """At most `steps` DeepFool steps per image, each (1 + overshoot) times the distance to the nearest linearised
    boundary; an image stops once misclassified. x: images (B, C, H, W) in [0, 1], y: (B,) true labels, eps an L2
    length per image. Returns a detached tensor like x with ||x_adv - x||_2 <= eps; eps = 0 returns a copy of x.
    """
    x, eps = check_images(x), check_eps(eps)
    steps = check_count(steps, "steps", 1)
    if isinstance(overshoot, bool) or not isinstance(overshoot, int | float) or not 0 <= overshoot < float("inf"):
        raise AttackError(f"overshoot must be a finite number >= 0; got {overshoot!r}")
    with attack_mode(model):
        goal = make_goal(model, x, y, targeted=False, target=None, variant="standard", least_likely=False)
        if eps == 0 or x.shape[0] == 0:
            return x.clone()
        x_adv = x.clone()
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)  # (B,) still classified as y
        for _ in range(steps):
            idx = active.nonzero()[:, 0]
            if idx.numel() == 0:
                break
            z, jac = _jacobian(model, x_adv[idx])
            goal.check_classes(z.shape[1])
            still = z.argmax(dim=1) == goal.y[idx]  # (b,)
            active[idx[~still]] = False
            go = idx[still]
            step = _step(z[still], jac[still], goal.y[go])
            x_adv[go] = (x_adv[go] + (1 + overshoot) * step).clamp(0.0, 1.0)
        return project_l2(x_adv, x, eps)
