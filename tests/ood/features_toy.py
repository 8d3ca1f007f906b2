"""Small synthetic feature sets: K clusters of positive (softplus) features in D dims and a head that separates them.

Each set also carries images and the network that gives its features from them (`ToyNet`: x = sigmoid(z / S) as
(N, 1, 4, 4) images in (0.2, 0.8), penultimate(x) = softplus(S * logit(x)) = the features), for the detectors
that step the input (`mahalanobis_pre`); the features themselves are softplus(z), as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dla.ood.features import FeatureSet, LinearHead

K, D = 4, 16
S = 8.0  # z / S keeps the images well inside (0, 1): a small input step is never clamped


def _means() -> torch.Tensor:  # (K, D) cluster centres before the softplus
    return 2.0 * torch.randn(K, D, generator=torch.Generator().manual_seed(0))


def trained_head() -> LinearHead:
    """A linear classifier of the clusters: weight = the class means (scaled), a small nonzero bias."""
    centres = F.softplus(_means())
    bias = 0.1 * torch.randn(K, generator=torch.Generator().manual_seed(3))
    return LinearHead(0.05 * centres, bias)  # moderate logits: no softmax probability below 1e-7


class ToyNet(nn.Module):
    """(N, 1, 4, 4) images in (0, 1) -> softplus(S * logit(x)) (N, D) features -> `trained_head` logits."""

    def __init__(self) -> None:
        super().__init__()
        h = trained_head()
        self.head = nn.Linear(D, K)
        with torch.no_grad():
            self.head.weight.copy_(h.weight)
            self.head.bias.copy_(h.bias)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(S * torch.logit(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.penultimate(x))


NET = ToyNet()


def images(f: torch.Tensor) -> torch.Tensor:
    """The images whose `ToyNet` features are f (N, D): sigmoid(softplus^-1(f) / S), (N, 1, 4, 4)."""
    z = f + torch.log(-torch.expm1(-f))  # softplus^-1
    return torch.sigmoid(z / S).reshape(-1, 1, 4, 4)


def make(f: torch.Tensor, y: torch.Tensor | None = None) -> FeatureSet:
    h = trained_head()
    return FeatureSet(f, h(f), h, y, images(f), NET)


def id_set(n: int = 400, seed: int = 1) -> FeatureSet:
    """n ID samples, labels 0, 1, ..., K-1 in turn: softplus(mean_y + noise)."""
    y = torch.arange(n) % K
    noise = 0.5 * torch.randn(n, D, generator=torch.Generator().manual_seed(seed))
    return make(F.softplus(_means()[y] + noise), y)


def ood_set(n: int = 200, seed: int = 2) -> FeatureSet:
    """n samples from none of the clusters: softplus(broad noise)."""
    return make(F.softplus(1.5 * torch.randn(n, D, generator=torch.Generator().manual_seed(seed))))
