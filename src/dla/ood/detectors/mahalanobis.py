"""Mahalanobis (Lee et al. 2018): Gaussian class-conditional features with one shared covariance.

fit: class means mu_k (K, D) and the pooled within-class covariance Sigma = sum_k sum_{i in k} (f_i - mu_k)
(f_i - mu_k)^T / N (D, D), as the paper's code (sklearn's EmpiricalCovariance on the centred features). score:
-1/2 min_k (f - mu_k)^T Sigma^+ (f - mu_k), the log-density of the closest class up to a constant. The
pseudo-inverse (float64) keeps a singular covariance (N < D, dead ReLU units) usable. Without the paper's input
preprocessing, which needs gradients through the network: that is `mahalanobis_pre`.
"""

from __future__ import annotations

import torch

from dla.ood.detectors.base import Detector, register_detector
from dla.ood.features import FeatureSet


@register_detector("mahalanobis", "Mahalanobis distance to the closest class mean, shared covariance (Lee et al. 2018)")
class Mahalanobis(Detector):
    def __init__(self) -> None:
        super().__init__()
        self.means: torch.Tensor | None = None  # (K, D) float64
        self.precision: torch.Tensor | None = None  # (D, D) float64

    def _fit(self, train: FeatureSet) -> None:
        f, y = train.features.double(), train.labels  # (N, D), (N,)
        k = train.logits.shape[1]
        self.means = torch.stack([f[y == c].mean(0) for c in range(k)])  # (K, D)
        centred = f - self.means[y]  # (N, D): each sample minus its own class mean
        cov = centred.T @ centred / len(f)
        self.precision = torch.linalg.pinv(cov, hermitian=True)

    def distances(self, f: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N, K) squared Mahalanobis distances to every class mean, float64 (differentiable)."""
        f = f.double()
        # (f - mu)^T P (f - mu) = f^T P f - 2 f^T P mu + mu^T P mu, for all K classes at once: (N, K)
        fp, mp = f @ self.precision, self.means @ self.precision
        return (fp * f).sum(1, keepdim=True) - 2 * fp @ self.means.T + (mp * self.means).sum(1)

    def _score(self, data: FeatureSet) -> torch.Tensor:
        return -0.5 * self.distances(data.features).amin(1)
