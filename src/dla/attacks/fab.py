"""FAB-T, L_inf (Croce & Hein, 2020): the targeted fast adaptive boundary attack, as AutoAttack runs it.

FAB looks for the smallest perturbation that changes the class. At the current point x1 it linearises the margin
toward a target class t, g(z) = z_t - z_y ~ g(x1) + grad g(x1) . (z - x1), and projects both x1 and the clean
image x0 onto the hyperplane g = 0 intersected with the [0, 1] box (`project_onto_hyperplane`: the minimal L_inf
step). The next point is a convex combination of the two projections, extrapolated by eta and weighted toward x0
by alpha (at most alpha_max) so the search stays near the clean image; once a point is misclassified it is kept if
it is the closest found so far and the search steps back toward x0 by beta. An example counts as broken at eps if
the closest misclassified point found is within eps of it.

FAB-T ("targeted" in AutoAttack's sense, untargeted in what it reports) runs this toward the classes ranked 2nd,
3rd, ... by the clean logits (9 of them on CIFAR-10), each on the examples not broken yet; a run's first restart
starts at x0, later ones at a random point of the eps/2 ball. Checked against torchattacks 3.5.1's `FAB` with
`multi_targeted=True`; the random starts are drawn from a private `torch.Generator(seed)` in its order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dla.attacks.apgd import check_classes
from dla.attacks.common import (
    AttackError,
    attack_mode,
    check_count,
    check_eps,
    check_images,
    check_positive,
    logits_of,
    make_goal,
    project,
)
from dla.attacks.registry import register_attack


def project_onto_hyperplane(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, d) the smallest-L_inf steps delta with w . (t + delta) = b and t + delta in [0, 1], per row.

    t, w: (n, d); b: (n,). Moving pixel i against w_i's sign by lam (or as far as the box allows, room_i) changes
    w . t by -sum_i |w_i| min(lam, room_i), a piecewise linear function of lam with a kink at each room: sorting
    the rooms finds the segment where it reaches the gap, and lam from that segment's line. Where even the box's
    corner does not reach the hyperplane, the corner (the step toward it as far as the box goes).
    """
    gap = (w * t).sum(dim=1) - b  # (n,) w . t - b: what w . delta must remove
    w = torch.where((gap >= 0)[:, None], w, -w)  # orient each row so that w . delta = -|gap|
    need = gap.abs()
    room = torch.where(w < 0, 1 - t, t)  # how far pixel i can move against w_i's sign inside [0, 1]
    rooms, order = room.sort(dim=1)  # ascending
    weight = w.abs().gather(1, order)
    below = torch.cumsum(weight * rooms, dim=1)  # sum over the k smallest rooms of |w| room
    above = torch.cumsum(weight.flip(1), dim=1).flip(1) - weight  # sum of |w| over the rooms after the k-th
    at_kinks = below + rooms * above  # (n, d) the change reached at lam = each room: nondecreasing
    k = torch.searchsorted(at_kinks, need[:, None], right=True)  # (n, 1) kinks passed before the gap is reached
    zero = torch.zeros_like(need[:, None])
    below_k = torch.where(k > 0, below.gather(1, (k - 1).clamp(min=0).clamp(max=t.shape[1] - 1)), zero)
    above_k = torch.where(k > 0, above.gather(1, (k - 1).clamp(min=0).clamp(max=t.shape[1] - 1)),
                          weight.sum(dim=1, keepdim=True))
    lam = ((need[:, None] - below_k) / above_k).clamp(min=0)
    lam = torch.where((k >= t.shape[1]) | (above_k <= 0), torch.full_like(lam, float("inf")), lam)
    step = torch.minimum(lam, room)
    return torch.where(w != 0, -torch.sign(w) * step, torch.zeros_like(step))


def _linf(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).abs().amax(dim=1)


def _margin_grad(model: nn.Module, x1: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(z_t - z_y (b,), its input gradient (b, d)) at x1."""
    with torch.enable_grad():
        x_req = x1.clone().requires_grad_(True)
        z = logits_of(model, x_req)
        g = z.gather(1, t[:, None])[:, 0] - z.gather(1, y[:, None])[:, 0]
        (grad,) = torch.autograd.grad(g.sum(), x_req)
    return g.detach(), grad.flatten(1)


@dataclass(frozen=True)
class FabSettings:
    eps: float
    steps: int
    alpha_max: float
    eta: float
    beta: float


def _fab_step(x1: torch.Tensor, x0: torch.Tensor, g: torch.Tensor, grad: torch.Tensor,
              s: FabSettings) -> torch.Tensor:
    """The next point: both x1 and x0 projected onto the linearised boundary, combined, extrapolated by eta."""
    b = x1.shape[0]
    plane = (grad * x1.flatten(1)).sum(dim=1) - g  # the linearised boundary: grad . z = plane
    d = project_onto_hyperplane(torch.cat((x1.flatten(1), x0.flatten(1))), torch.cat((grad, grad)),
                                torch.cat((plane, plane)))
    size = _linf(d).clamp(min=1e-8)
    alpha = (size[:b] / (size[:b] + size[b:])).clamp(0.0, s.alpha_max).view(-1, *[1] * (x1.ndim - 1))
    d1, d2 = d[:b].view_as(x1), d[b:].view_as(x1)
    return ((x1 + s.eta * d1) * (1 - alpha) + (x0 + s.eta * d2) * alpha).clamp(0.0, 1.0)


def fab_run(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, s: FabSettings,
            start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One targeted FAB run from `start` on x0 (b, C, H, W), all classified correctly: (closest misclassified
    point found (x0 where none), its L_inf distance to x0 (inf where none))."""
    rows = (-1, *[1] * (x0.ndim - 1))
    x1, best = start, x0.clone()
    dist = torch.full((x0.shape[0],), float("inf"), dtype=x0.dtype, device=x0.device)
    for _ in range(s.steps):
        g, grad = _margin_grad(model, x1, y, t)
        x1 = _fab_step(x1, x0, g, grad, s)
        with torch.no_grad():
            adv = logits_of(model, x1).argmax(dim=1) != y
        r = _linf(x1 - x0)
        closer = adv & (r < dist)
        best = torch.where(closer.view(rows), x1, best)
        dist = torch.where(closer, r, dist)
        x1 = torch.where(adv.view(rows), x0 + (x1 - x0) * s.beta, x1)  # step back toward x0 from the boundary
    return best, dist


def _random_start(x0: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """x0 + (eps / 2) u / ||u||_inf with u ~ U(-1, 1) per pixel, clamped: the reference's start for restarts."""
    u = (2 * torch.rand(x0.shape, generator=generator) - 1).to(x0)
    return (x0 + eps * u / _linf(u).view(-1, *[1] * (x0.ndim - 1)) * 0.5).clamp(0.0, 1.0)


def check_fab(steps: int, targets: int, restarts: int, alpha_max: float, eta: float, beta: float,
              seed: int) -> None:
    for value, name in ((steps, "steps"), (targets, "targets"), (restarts, "restarts")):
        check_count(value, name, 1)
    if isinstance(alpha_max, bool) or not isinstance(alpha_max, int | float) or not 0 <= alpha_max <= 1:
        raise AttackError(f"alpha_max must be a number in [0, 1]; got {alpha_max!r}")
    check_positive(eta, "eta")
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 < beta <= 1:
        raise AttackError(f"beta must be a number in (0, 1]; got {beta!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise AttackError(f"seed must be an integer; got {seed!r}")


@register_attack("fab-t", "targeted fast adaptive boundary attack, L_inf (Croce & Hein 2020), as in AutoAttack",
                 targeted=False)
def fab_t(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    eps: float,
    steps: int = 100,
    *,
    targets: int = 9,
    restarts: int = 1,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    seed: int = 0,
) -> torch.Tensor:
    """FAB-T: for the classes ranked 2 ... targets + 1 by the clean logits (capped at K - 1), `restarts` runs each.

    x: images (B, C, H, W) in [0, 1]; y: true labels (B,); eps in pixel units (FAB minimises the distance; eps only
    decides success). Per example the result is: the clean image if misclassified already; else the closest
    misclassified point of the first run that found one within eps; else the closest misclassified point found
    at all, projected onto the eps ball (where no run found one, x itself). torchattacks returns the clean image
    in the last two cases: the robust accuracy differs only if the projected point happens to be misclassified.
    Returns a detached tensor like x with ||x_adv - x||_inf <= eps; eps = 0 returns a copy of x.
    """
    x, eps = check_images(x), check_eps(eps)
    check_fab(steps, targets, restarts, alpha_max, eta, beta, seed)
    s = FabSettings(eps, steps, float(alpha_max), float(eta), float(beta))
    with attack_mode(model):
        goal = make_goal(model, x, y, targeted=False, target=None, variant="standard", least_likely=False)
        if eps == 0 or x.shape[0] == 0:
            return x.clone()
        k = check_classes(model, x[:1], goal, 2, "fab-t")
        with torch.no_grad():
            z = logits_of(model, x)
        ranked, robust = z.argsort(dim=1), z.argmax(dim=1) == goal.y  # ascending: the last column is the prediction
        out, closest = x.clone(), torch.full((x.shape[0],), float("inf"), dtype=x.dtype, device=x.device)
        generator = torch.Generator().manual_seed(seed)
        for rank in range(2, min(targets, k - 1) + 2):
            for restart in range(restarts):
                idx = robust.nonzero()[:, 0]
                if idx.numel() == 0:
                    break
                x0 = x[idx]
                start = _random_start(x0, eps, generator) if restart > 0 else x0.clone()
                best, dist = fab_run(model, x0, goal.y[idx], ranked[idx, -rank], s, start)
                broken, closer = dist <= eps, dist < closest[idx]
                out[idx] = torch.where((broken | closer).view(-1, *[1] * (x.ndim - 1)), best, out[idx])
                closest[idx] = torch.minimum(dist, closest[idx])
                robust[idx] = ~broken
        return project(out, x, eps)
