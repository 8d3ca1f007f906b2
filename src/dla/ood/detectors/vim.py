"""ViM (Wang et al. 2022): virtual logit = alpha * the norm of the feature's residual outside the principal subspace.

fit: origin u = -W^+ b (where the logits vanish), principal subspace = the top-d eigenvectors of the centred
training features' second moment (D, D); alpha = mean max logit / mean residual norm on the training set. score =
logsumexp(logits) - alpha * ||residual||, i.e. the log of the softmax probability of the ID classes against the
virtual class, up to sign: higher = more ID. d defaults to the paper's rule: 1000 for D >= 2048, 512 for
D >= 768, else D / 2.
"""

from __future__ import annotations

import torch

from dla.ood.detectors.base import Detector, register_detector
from dla.ood.detectors.common import energy
from dla.ood.features import FeatureSet
from dla.ood.metrics import OODError


def default_dim(width: int) -> int:
    return 1000 if width >= 2048 else 512 if width >= 768 else width // 2


@register_detector("vim", "virtual-logit matching: energy minus the scaled residual norm (Wang et al. 2022)")
class ViM(Detector):
    def __init__(self, d: int | None = None) -> None:
        super().__init__()
        if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1):
            raise OODError(f"detector 'vim': d must be a positive integer or None (the paper's rule); got {d!r}")
        self.d = d
        self.origin: torch.Tensor | None = None  # (D,) float64
        self.residual: torch.Tensor | None = None  # (D, D - d) float64: the complement of the principal subspace
        self.alpha = 0.0

    def _fit(self, train: FeatureSet) -> None:
        width = train.features.shape[1]
        d = self.d if self.d is not None else default_dim(width)
        if d >= width:
            raise OODError(f"detector 'vim': d={d} leaves no residual of {width}-dim features; use d < {width}")
        w, b = train.head.weight.double(), train.head.bias.double()
        # Singular values below float32 resolution are rounding noise of the float32 weights, not directions: a
        # rank-deficient head (rows summing to zero) would otherwise send the origin off to 1e5.
        self.origin = -torch.linalg.pinv(w, rtol=max(w.shape) * torch.finfo(torch.float32).eps) @ b  # (D,)
        x = train.features.double() - self.origin  # (N, D)
        _, vecs = torch.linalg.eigh(x.T @ x / len(x))  # ascending eigenvalues, eigenvectors as columns
        self.residual = vecs[:, : width - d]  # the D - d smallest directions
        norm = (x @ self.residual).norm(dim=1)  # (N,)
        self.alpha = float(train.logits.double().amax(1).mean() / norm.mean().clamp_min(1e-12))

    def _score(self, data: FeatureSet) -> torch.Tensor:
        x = data.features.double() - self.origin
        virtual = self.alpha * (x @ self.residual).norm(dim=1)  # (N,)
        return energy(data.head(data.features).double()) - virtual
