"""ReAct (Sun et al. 2021): clip the penultimate activations at their ID percentile, then score the energy.

fit: threshold c = the `percentile` quantile of every activation of every ID training sample (the paper: 90%).
score = logsumexp(head(min(f, c))): the rare very large activations that OOD inputs cause stop inflating the
logits.
"""

from __future__ import annotations

import numpy as np
import torch

from dla.ood.detectors.base import Detector, register_detector
from dla.ood.detectors.common import check_fraction, energy
from dla.ood.features import FeatureSet


@register_detector("react", "energy of the logits with the features clipped at their ID 90th percentile (Sun et al. "
                            "2021)")
class ReAct(Detector):
    def __init__(self, percentile: float = 0.9) -> None:
        super().__init__()
        self.percentile = check_fraction("react", "percentile", percentile)
        self.threshold: float | None = None

    def _fit(self, train: FeatureSet) -> None:
        # numpy: torch.quantile refuses inputs over 2^24 values (45,000 x 512 features is 23M).
        self.threshold = float(np.percentile(train.features.numpy(), 100 * self.percentile))

    def _score(self, data: FeatureSet) -> torch.Tensor:
        return energy(data.head(data.features.clamp(max=self.threshold)))
