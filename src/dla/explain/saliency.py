"""Vanilla gradient saliency (Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks", ICLR
workshop 2014), with optional SmoothGrad (Smilkov et al. 2017).

    M_c(i, j) = max_channel | d y_c / d x(channel, i, j) |

with y_c the class score (the logit) and x the image in [0, 1] pixel space (normalisation is inside the
model). SmoothGrad averages |gradient| over `samples` noisy copies x + N(0, noise^2) before the channel max:
`noise` is in pixel units, i.e. the fraction of the [0, 1] range (the paper's 10-20%). The noise is drawn from
a generator seeded with `seed` and is the same for every image of the batch, so the result is reproducible and
a sample's map does not depend on the other samples. The map is already at input resolution and non-negative;
`raw` returns it before the per-sample normalisation.
"""

from __future__ import annotations

import torch
from torch import nn

from dla.explain.base import Explainer, ExplainError, class_scores, register_method, selected_scores


@register_method("saliency", "vanilla gradient |d score / d input| (Simonyan et al. 2014), max over colour "
                             "channels; optional SmoothGrad")
class Saliency(Explainer):
    scores_checked = True  # the target is checked on the method's own forward pass: see Explainer

    def __init__(self, model: nn.Module, samples: int = 0, noise: float = 0.15, seed: int = 0) -> None:
        super().__init__(model)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise ExplainError(f"samples must be an integer >= 0 (0: vanilla gradient; SmoothGrad uses ~50); "
                               f"got {samples!r}")
        if not noise >= 0:
            raise ExplainError(f"noise must be >= 0 (a standard deviation in pixel units, e.g. 0.15); got {noise!r}")
        self.samples, self.noise, self.seed = samples, noise, seed

    def layer_map(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.samples:
            return self.abs_grad(x, target).amax(dim=1)  # (B, H, W)
        gen = torch.Generator().manual_seed(self.seed)
        total = torch.zeros_like(x)  # (B, C, H, W)
        for _ in range(self.samples):
            eps = torch.randn(x.shape[1:], generator=gen, dtype=x.dtype).to(x.device)  # (C, H, W), shared by the batch
            total += self.abs_grad(x + self.noise * eps, target)
        return (total / self.samples).amax(dim=1)  # (B, H, W)

    def abs_grad(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        x = x.detach().requires_grad_(True)  # a detached alias: the caller's tensor is untouched
        (grad,) = torch.autograd.grad(selected_scores(class_scores(self.model, x), target), x)
        return grad.abs()
