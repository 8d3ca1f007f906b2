"""Integrated Gradients (Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017).

For an image x, a baseline x' (default: the black image, 0 in pixel space) and the class score y_c (the logit):

    IG_i(x) = (x_i - x'_i) * integral_0^1 d y_c / d x_i (x' + a (x - x')) da

The integral is a `steps`-point Gauss-Legendre quadrature on [0, 1] (captum's default `gausslegendre`, so the
same `steps` give the same numbers): nodes a_k and weights w_k with sum_k w_k = 1. Completeness, the axiom
that makes the attributions add up: sum_i IG_i = y_c(x) - y_c(x') up to the quadrature error.

The layer map is the attribution summed over colour channels (B, H, W), signed: the template's ReLU keeps the
pixels that raise the score. The interpolated images run `chunk` steps per forward pass, (chunk * B, C, H, W),
which bounds memory without changing the result.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dla.explain.base import Explainer, ExplainError, class_scores, register_method, selected_scores


def gauss_legendre(steps: int) -> tuple[list[float], list[float]]:
    """Nodes a_k in (0, 1) and weights w_k (summing to 1) of the `steps`-point Gauss-Legendre rule on [0, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)  # on [-1, 1], weights summing to 2
    return list(0.5 * (nodes + 1)), list(0.5 * weights)


@register_method("integrated_gradients", "Integrated Gradients (Sundararajan et al. 2017): gradients along the "
                                         "path from a black baseline to the image, times (x - baseline)")
class IntegratedGradients(Explainer):
    scores_checked = True  # the target is checked on the method's own forward passes: see Explainer

    def __init__(self, model: nn.Module, steps: int = 32, baseline: float = 0.0, chunk: int = 8) -> None:
        super().__init__(model)
        for key, v in (("steps", steps), ("chunk", chunk)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ExplainError(f"integrated_gradients: {key} must be a positive integer; got {v!r}")
        if isinstance(baseline, bool) or not isinstance(baseline, (int, float)) or not 0 <= baseline <= 1:
            raise ExplainError(f"integrated_gradients: baseline must be a pixel value in [0, 1] (0 = black); "
                               f"got {baseline!r}")
        self.steps, self.baseline, self.chunk = steps, float(baseline), chunk

    def layer_map(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.attributions(x, target).sum(dim=1)  # (B, H, W)

    def attributions(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # -> (B, C, H, W)
        base = torch.full_like(x, self.baseline)  # (B, C, H, W)
        alphas, weights = gauss_legendre(self.steps)
        path = torch.zeros_like(x)  # (B, C, H, W): sum_k w_k * gradient at step k
        for start in range(0, self.steps, self.chunk):
            a = torch.tensor(alphas[start : start + self.chunk], dtype=x.dtype, device=x.device)  # (k,)
            w = torch.tensor(weights[start : start + self.chunk], dtype=x.dtype, device=x.device)  # (k,)
            k = len(a)
            # (k * B, C, H, W): step-major, the B images at a_0, then at a_1, ...
            points = (base + a.view(-1, 1, 1, 1, 1) * (x - base)).flatten(0, 1).requires_grad_(True)
            scores = selected_scores(class_scores(self.model, points), target.repeat(k))
            (grad,) = torch.autograd.grad(scores, points)
            path += (w.view(-1, 1, 1, 1, 1) * grad.view(k, *x.shape)).sum(dim=0)
        return (x - base) * path
