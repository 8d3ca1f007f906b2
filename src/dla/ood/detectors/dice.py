"""DICE (Sun & Li 2022): sparsify the last layer to the weights that contribute most on ID data, then energy.

fit: contribution of weight (k, j) = mean ID activation of feature j times W[k, j] (K, D); the `p` fraction of
smallest contributions is set to zero (the paper's sparsity, 0.9 on CIFAR-10). score = logsumexp(f @ W_masked^T
+ b).
"""

from __future__ import annotations

import torch

from dla.ood.detectors.base import Detector, register_detector
from dla.ood.detectors.common import check_fraction, energy
from dla.ood.features import FeatureSet


@register_detector("dice", "energy of a last layer sparsified to its top ID contributions (Sun & Li 2022)")
class DICE(Detector):
    def __init__(self, p: float = 0.9) -> None:
        super().__init__()
        self.p = check_fraction("dice", "p", p)
        self.weight: torch.Tensor | None = None  # (K, D), masked

    def _fit(self, train: FeatureSet) -> None:
        w = train.head.weight
        contribution = train.features.mean(0) * w  # (K, D)
        threshold = torch.quantile(contribution.flatten(), self.p)
        self.weight = torch.where(contribution > threshold, w, torch.zeros_like(w))

    def _score(self, data: FeatureSet) -> torch.Tensor:
        return energy(data.features @ self.weight.T + data.head.bias)
