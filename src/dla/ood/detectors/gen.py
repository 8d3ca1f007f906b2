"""GEN (Liu et al. 2023): minus the generalised entropy sum_{top-M} p^gamma (1 - p)^gamma of the softmax.

The sum runs over the m largest probabilities (the paper: gamma = 0.1, M = 100 on ImageNet; m is capped at the
number of classes, so on CIFAR-10 it is all ten). Higher = more ID.
"""

from __future__ import annotations

import torch

from dla.ood.detectors.base import Detector, register_detector
from dla.ood.features import FeatureSet
from dla.ood.metrics import OODError


@register_detector("gen", "minus the generalised entropy of the top-m softmax probabilities (Liu et al. 2023)")
class GEN(Detector):
    needs_fit = False
    needs_features = False

    def __init__(self, gamma: float = 0.1, m: int = 100) -> None:
        super().__init__()
        if not gamma > 0:
            raise OODError(f"detector 'gen': gamma must be > 0 (the paper uses 0.1); got {gamma!r}")
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise OODError(f"detector 'gen': m must be a positive integer (the paper's M, 100); got {m!r}")
        self.gamma, self.m = float(gamma), m

    def _score(self, data: FeatureSet) -> torch.Tensor:
        p = torch.softmax(data.logits.double(), dim=1)  # (N, K)
        top = p.topk(min(self.m, p.shape[1]), dim=1).values  # (N, M)
        return -(top.pow(self.gamma) * (1 - top).pow(self.gamma)).sum(1)
