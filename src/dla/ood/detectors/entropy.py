"""Entropy: minus the Shannon entropy of the softmax, sum_k p_k log p_k; higher = a more peaked = more ID posterior."""

from __future__ import annotations

import torch

from dla.ood.detectors.base import Detector, register_detector
from dla.ood.features import FeatureSet


@register_detector("entropy", "minus the entropy of the softmax posterior")
class Entropy(Detector):
    needs_fit = False
    needs_features = False

    def _score(self, data: FeatureSet) -> torch.Tensor:
        logp = torch.log_softmax(data.logits.double(), dim=1)  # exact even where p underflows to 0
        return (logp.exp() * logp).sum(1)
