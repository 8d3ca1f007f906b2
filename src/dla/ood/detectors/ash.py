"""ASH-S (Djurisic et al. 2023): keep each sample's largest activations, rescale them, then score the energy.

Per sample, the `percentile` fraction of smallest penultimate activations is set to zero and the rest is
multiplied by exp(s1 / s2), s1 and s2 the sums of the activations before and after pruning. No fitting. The paper
shapes the feature maps before pooling; here the pooled vector (what `penultimate` gives every model) is shaped,
which is the same thing for a 1 x 1 map. Meant for non-negative (post-ReLU) features; by default the paper's
ASH-S@90 setting.
"""

from __future__ import annotations

import torch

from dla.ood.detectors.base import Detector, register_detector
from dla.ood.detectors.common import check_fraction, energy
from dla.ood.features import FeatureSet


@register_detector("ash", "energy after pruning 90% of each sample's activations and rescaling the rest (ASH-S, "
                          "Djurisic et al. 2023)")
class ASH(Detector):
    needs_fit = False

    def __init__(self, percentile: float = 0.9) -> None:
        super().__init__()
        self.percentile = check_fraction("ash", "percentile", percentile)

    def _score(self, data: FeatureSet) -> torch.Tensor:
        f = data.features  # (N, D)
        keep = max(f.shape[1] - round(f.shape[1] * self.percentile), 1)  # activations kept per sample
        values, idx = f.topk(keep, dim=1)
        pruned = torch.zeros_like(f).scatter_(1, idx, values)
        kept = pruned.sum(1)  # (N,); 0 only for features that are all <= 0, then nothing to rescale
        scale = torch.where(kept != 0, torch.exp(f.sum(1) / kept), torch.ones_like(kept))
        return energy(data.head(pruned * scale[:, None]))
