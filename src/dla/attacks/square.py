"""Square attack, L_inf (Andriushchenko et al., 2020): score-based black-box random search, as AutoAttack runs it.

No gradients: only the model's logits are queried. From vertical stripes of +-eps (one sign per column and
channel), each query adds a random square of side s at a random place, with one random sign per channel, to the
current best image (projected onto the eps ball and [0, 1]) and keeps it where the margin loss z_y - max_{k!=y} z_k
fell, or where the image is misclassified. The square's area shrinks on a fixed schedule of the query index
(p_init, halved at 10, 50, 200, ... of 10000, rescaled to the query budget). Each query is one forward pass over
the still-robust images of the batch at once; the square's place and signs are shared by the batch, as in
AutoAttack's implementation (and torchattacks 3.5.1's `Square`, the reference it is tested against).

Seeded: every draw comes from a private `torch.Generator(seed)`, in the order torchattacks draws from the global
RNG after `torch.manual_seed(seed)`, so the two give the same examples without touching the global state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dla.attacks.apgd import check_classes
from dla.attacks.common import (
    AttackError,
    attack_mode,
    check_count,
    check_eps,
    check_images,
    logits_of,
    make_goal,
    project,
)
from dla.attacks.registry import register_attack

LOSSES = ("margin", "ce")
# (fraction of 10000 queries up to which, divisor of p_init): the schedule of the square's area
SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


def p_at(i: int, queries: int, p_init: float) -> float:
    """The fraction of the image the i-th query's square covers (the schedule is written for 10000 queries)."""
    it = int(i / queries * 10000)
    for until, divisor in SCHEDULE:
        if it <= until:
            return p_init / divisor
    return p_init / 512


def margin_and_loss(z: torch.Tensor, y: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """((b,) margin z_y - max_{k != y} z_k, (b,) the loss to lower): the margin itself, or -CE(z, y)."""
    z_y = z.gather(1, y[:, None])[:, 0]
    other = z.scatter(1, y[:, None], -float("inf")).amax(dim=1)
    margin = z_y - other
    return margin, (margin if loss == "margin" else -F.cross_entropy(z, y, reduction="none"))


def _signs(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """+-1 per entry, the reference's sign(2 U(0, 1) - 1) (exactly 0 has probability 2^-24: kept, as there)."""
    return torch.sign(2 * torch.rand(shape, generator=generator) - 1)


def _place(n: int, generator: torch.Generator) -> int:
    """A corner coordinate in 0 ... n - 1 (0 when n is 0), from one float32 uniform draw as in the reference."""
    return int((n * torch.rand(1, generator=generator)).long())


def square_run(score: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
               x: torch.Tensor, y: torch.Tensor, eps: float, queries: int, p_init: float,
               generator: torch.Generator) -> torch.Tensor:
    """One Square run on x (b, C, H, W), all classified correctly: the best image found per example."""
    b, c, h, w = x.shape
    x_best = (x + eps * _signs((b, c, 1, w), generator).to(x)).clamp(0.0, 1.0)
    margin, loss = score(x_best, y)
    for i in range(queries):
        idx = (margin > 0).nonzero()[:, 0]  # (r,) the still-robust examples
        if idx.numel() == 0:
            break
        s = max(round(math.sqrt(p_at(i, queries, p_init) * h * w)), 1)
        vh, vw = _place(h - s, generator), _place(w - s, generator)
        patch = 2.0 * eps * _signs((c, 1, 1), generator).to(x)
        x_r, best_r = x[idx], x_best[idx]
        x_new = best_r.clone()
        x_new[:, :, vh:vh + s, vw:vw + s] += patch
        x_new = torch.minimum(torch.maximum(x_new, x_r - eps), x_r + eps).clamp(0.0, 1.0)
        m_new, l_new = score(x_new, y[idx])
        lower = l_new < loss[idx]
        take = lower | (m_new <= 0)  # a lower loss, or misclassified
        loss[idx] = torch.where(lower, l_new, loss[idx])
        margin[idx] = torch.where(take, m_new, margin[idx])
        x_best[idx] = torch.where(take.view(-1, 1, 1, 1), x_new, best_r)
    return x_best


@register_attack("square", "Square attack, L_inf (Andriushchenko et al. 2020): black-box random search, no gradients",
                 targeted=False)
def square(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    eps: float,
    queries: int = 5000,
    *,
    restarts: int = 1,
    p_init: float = 0.8,
    loss: str = "margin",
    seed: int = 0,
) -> torch.Tensor:
    """Square-L_inf with at most `queries` queries per run (5000 in AutoAttack's standard version), untargeted.

    x: images (B, C, H, W) in [0, 1]; y: true labels (B,); eps in pixel units. `restarts` runs, each on the examples
    not yet misclassified; `loss` is "margin" (AutoAttack's) or "ce" (the search lowers -CE). Per example the
    result is the clean image if it is misclassified already, else the first run's image that misclassifies it,
    else the last run's best image (torchattacks returns the clean image there: the robust accuracy is the same).
    Returns a detached tensor like x with ||x_adv - x||_inf <= eps; eps = 0 returns a copy of x.
    """
    x, eps = check_images(x), check_eps(eps)
    queries, restarts = check_count(queries, "queries", 1), check_count(restarts, "restarts", 1)
    if isinstance(p_init, bool) or not isinstance(p_init, int | float) or not 0 < p_init <= 1:
        raise AttackError(f"p_init must be a fraction of the image in (0, 1]; got {p_init!r}")
    if loss not in LOSSES:
        raise AttackError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise AttackError(f"seed must be an integer; got {seed!r}")
    if x.ndim != 4:
        raise AttackError(f"square attacks images (B, C, H, W); got shape {tuple(x.shape)}")
    with attack_mode(model):
        goal = make_goal(model, x, y, targeted=False, target=None, variant="standard", least_likely=False)
        if eps == 0 or x.shape[0] == 0:
            return x.clone()
        check_classes(model, x[:1], goal, 2, "square")

        def score(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.no_grad():
                return margin_and_loss(logits_of(model, images), labels, loss)

        with torch.no_grad():
            robust = logits_of(model, x).argmax(dim=1) == goal.y  # (B,) still to fool
        out, generator = x.clone(), torch.Generator().manual_seed(seed)
        for _ in range(restarts):
            idx = robust.nonzero()[:, 0]
            if idx.numel() == 0:
                break
            best = square_run(score, x[idx], goal.y[idx], eps, queries, float(p_init), generator)
            with torch.no_grad():
                fooled = logits_of(model, best).argmax(dim=1) != goal.y[idx]
            out[idx] = best
            robust[idx] = ~fooled
        return project(out, x, eps)
