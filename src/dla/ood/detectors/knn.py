"""KNN (Sun et al. 2022): distance to the k-th nearest ID training feature, features normalised to unit length.

score = -||z - z_(k)||, z = f / ||f||; the search is exact (all pairs, in chunks of the test set), in float64 so
that small distances keep their digits (the ||a||^2 + ||b||^2 - 2 a.b form loses them in float32).
"""

from __future__ import annotations

import torch

from dla.ood.detectors.base import Detector, register_detector
from dla.ood.features import FeatureSet
from dla.ood.metrics import OODError

CHUNK = 1024  # test samples per distance block: a (CHUNK, N_train) float64 matrix


def unit(f: torch.Tensor) -> torch.Tensor:
    return f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)


@register_detector("knn", "minus the distance to the k-th nearest normalised ID training feature (Sun et al. 2022)")
class KNN(Detector):
    def __init__(self, k: int = 50) -> None:
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise OODError(f"detector 'knn': k must be a positive integer (the paper uses 50 on CIFAR-10); got {k!r}")
        self.k = k
        self.bank: torch.Tensor | None = None  # (N, D) float64 unit vectors

    def _fit(self, train: FeatureSet) -> None:
        if len(train) < self.k:
            raise OODError(f"detector 'knn': k={self.k} needs at least {self.k} training samples; got {len(train)}")
        self.bank = unit(train.features.double())

    def _score(self, data: FeatureSet) -> torch.Tensor:
        z = unit(data.features.double())  # (N, D)
        out = []
        for chunk in z.split(CHUNK):
            d = torch.cdist(chunk, self.bank)  # (B, N_train)
            out.append(d.topk(self.k, dim=1, largest=False).values[:, -1])
        return -torch.cat(out)
