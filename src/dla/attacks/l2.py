"""The L2 ball: per-image Euclidean lengths and a projection onto {x' : ||x' - x||_2 <= eps} ∩ [0, 1]^d.

An L2 radius is per image (over every channel and pixel), so eps = 0.5 on a 3x32x32 image allows, e.g., a change
of 0.5 / sqrt(3072) ≈ 0.009 on every pixel, or 0.5 on a single one.
"""

from __future__ import annotations

import torch

from dla.attacks.common import eps_in_dtype


def l2_norms(d: torch.Tensor) -> torch.Tensor:
    """(B,) the Euclidean length of each image of d (B, ...), in d's dtype."""
    return d.flatten(1).norm(p=2, dim=1)


def _rows(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.view(-1, *[1] * (ndim - 1))  # (B,) -> (B, 1, 1, 1) for images


def project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """x_adv scaled toward x into the L2 eps-ball, then clamped to [0, 1]; detached, exact despite rounding.

    The scale is min(1, eps / ||x_adv - x||) (torchattacks.PGDL2's); clamping afterwards only shortens each pixel's
    change (x is in [0, 1]), so the result stays in the ball. Rounding can leave a norm one ulp above eps, measured
    in x's dtype or in float64: those images are shrunk by a few ulps more until both measures say <= eps (the
    dtype's measure against eps rounded down to the dtype, so that it also holds as a Python float).
    """
    delta = x_adv - x  # (B, C, H, W)
    n = l2_norms(delta)  # (B,)
    factor = torch.where(n > eps, eps / n.clamp_min(torch.finfo(n.dtype).tiny), torch.ones_like(n))
    # An image already in the ball is kept as it is: x + (x_adv - x) need not round back to x_adv.
    out = torch.where(_rows(n > eps, x.ndim), x + delta * _rows(factor, x.ndim), x_adv).clamp(0.0, 1.0)
    shrink = 1.0
    for _ in range(8):  # one pass is almost always enough
        over = _outside(out, x, eps)  # (B,)
        if not over.any():
            return out.detach()
        shrink *= 1 - 4 * torch.finfo(x.dtype).eps
        f = torch.where(over, factor * shrink, factor)
        out = torch.where(_rows(over, x.ndim), (x + delta * _rows(f, x.ndim)).clamp(0.0, 1.0), out)
    return torch.where(_rows(_outside(out, x, eps), x.ndim), x, out).detach()


def _outside(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """(B,) whether an image is outside the ball measured in x's dtype or in float64."""
    return (l2_norms(x_adv - x) > eps_in_dtype(eps, x.dtype)) | (l2_norms(x_adv.double() - x.double()) > eps)
