"""Small synthetic feature sets: K clusters of positive (softplus) features in D dims and a head that separates them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dla.ood.features import FeatureSet, LinearHead

K, D = 4, 16


def _means() -> torch.Tensor:  # (K, D) cluster centres before the softplus
    return 2.0 * torch.randn(K, D, generator=torch.Generator().manual_seed(0))


def trained_head() -> LinearHead:
    """A linear classifier of the clusters: weight = the class means (scaled), a small nonzero bias."""
    centres = F.softplus(_means())
    bias = 0.1 * torch.randn(K, generator=torch.Generator().manual_seed(3))
    return LinearHead(0.05 * centres, bias)  # moderate logits: no softmax probability below 1e-7


def make(f: torch.Tensor, y: torch.Tensor | None = None) -> FeatureSet:
    h = trained_head()
    return FeatureSet(f, h(f), h, y)


def id_set(n: int = 400, seed: int = 1) -> FeatureSet:
    """n ID samples, labels 0, 1, ..., K-1 in turn: softplus(mean_y + noise)."""
    y = torch.arange(n) % K
    noise = 0.5 * torch.randn(n, D, generator=torch.Generator().manual_seed(seed))
    return make(F.softplus(_means()[y] + noise), y)


def ood_set(n: int = 200, seed: int = 2) -> FeatureSet:
    """n samples from none of the clusters: softplus(broad noise)."""
    return make(F.softplus(1.5 * torch.randn(n, D, generator=torch.Generator().manual_seed(seed))))
