"""Mahalanobis with input preprocessing (Lee et al. 2018): a small signed-gradient step on the image first.

x~ = clamp(x - eps * sign(grad_x d2(x)), 0, 1), d2 = the squared Mahalanobis distance of the image's penultimate
features to the class mean closest to them; score = `mahalanobis` of the features of x~. The step pulls the
features towards their class, and ID images move further than OOD ones, which widens the gap (as ODIN's step
widens the softmax gap). Fitted like `mahalanobis` (same means and covariance); scoring runs the network once
forward and backward on the images and once forward on the stepped ones, so it needs the images and the model
(`FeatureSet.inputs`, `.model`, which `dla.ood.features.extract` keeps).

`eps` is in pixel units ([0, 1] images; normalisation is a module inside the model): the paper's code divides
the gradient sign by the per-channel std before adding it to the normalised image, a step of eps in pixel space,
so its grid (0, 0.0005, 0.001, 0.0014, 0.002, 0.005, 0.01) carries over. Only the penultimate layer, without the
paper's ensemble of layers weighted by a logistic regression fitted on OOD validation data. Two differences from
that code, as in dla's ODIN: x~ is clamped to the image range, and a zero gradient does not move a pixel.
`eps=0` is `mahalanobis`.
"""

from __future__ import annotations

import torch
from torch import nn

from dla.nn.modes import eval_frozen
from dla.ood.detectors.base import register_detector
from dla.ood.detectors.mahalanobis import Mahalanobis
from dla.ood.features import FeatureSet
from dla.ood.metrics import OODError

CHUNK = 250  # images per backward pass: bounds the activation memory, changes no score


@register_detector("mahalanobis_pre", "Mahalanobis after an input step of eps towards the closest class mean "
                                      "(Lee et al. 2018)")
class MahalanobisPre(Mahalanobis):
    needs_inputs = True

    def __init__(self, eps: float = 0.002) -> None:
        super().__init__()
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not eps >= 0:
            raise OODError(f"detector 'mahalanobis_pre': eps must be >= 0 (a pixel-space step; pytorch-ood uses "
                           f"0.002, the paper tunes it in 0 ... 0.01); got {eps!r}")
        self.eps = float(eps)

    def _score(self, data: FeatureSet) -> torch.Tensor:
        if self.eps == 0:
            return super()._score(data)
        model = data.model
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        out = []
        with eval_frozen(model):
            for chunk in data.inputs.split(CHUNK):
                x = chunk.to(device)
                x = x.float().div(255) if not x.is_floating_point() else x.float()
                x = (x - self.eps * self.direction(model, x)).clamp_(0.0, 1.0)
                with torch.no_grad():
                    out.append(-0.5 * self.distances(model.penultimate(x)).amin(1).cpu())
        return torch.cat(out)

    def direction(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """sign(grad_x d2(x) to the closest class mean), like x (the model in eval mode, frozen)."""
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            d2 = self.distances(model.penultimate(x))  # (B, K)
            closest = d2.detach().argmin(1, keepdim=True)
            # Eval mode keeps samples independent: the gradient of the sum is each sample's own gradient.
            (grad,) = torch.autograd.grad(d2.gather(1, closest).sum(), x)
        return grad.sign()
