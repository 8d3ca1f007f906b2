"""Small pieces several detectors share (not a detector: `base._ensure_builtin` imports it, it registers nothing)."""

from __future__ import annotations

import torch

from dla.ood.metrics import OODError


def energy(logits: torch.Tensor) -> torch.Tensor:
    """(N, K) -> (N,) negative free energy logsumexp(logits): higher = more ID (Liu et al. 2020, T = 1)."""
    return torch.logsumexp(logits, dim=1)


def check_fraction(who: str, name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise OODError(f"detector {who!r}: {name} is a fraction in [0, 1] (0.9 for 90%); got {value!r}")
    return float(value)
