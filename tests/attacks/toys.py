"""Small models for the attack tests: one where eval/train mode matters, one linear enough for closed forms."""

from __future__ import annotations

import torch
from torch import nn

from dla.nn import Normalize

from ..conftest import TINY_SHAPE, tiny_classifier

SHAPE = TINY_SHAPE  # (C, H, W)
CLASSES = 5
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def tiny_model(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    return tiny_classifier(seed, CLASSES, dtype)


def linear_model(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """Normalize + Flatten + Linear: logits z = W (x - m) / s + b, whose input gradients have closed forms."""
    torch.manual_seed(seed)
    d = SHAPE[0] * SHAPE[1] * SHAPE[2]
    return nn.Sequential(Normalize(MEAN, STD), nn.Flatten(), nn.Linear(d, CLASSES)).to(dtype)


def images(n: int, seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, C, H, W) in [0, 1], with whole images at 0 and at 1 and pixels near both edges, where clamping binds."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *SHAPE, generator=g, dtype=torch.float64)
    edges = [
        torch.zeros(SHAPE, dtype=torch.float64),
        torch.ones(SHAPE, dtype=torch.float64),
        1.0 - 1e-3 * torch.rand(SHAPE, generator=g, dtype=torch.float64),
        1e-3 * torch.rand(SHAPE, generator=g, dtype=torch.float64),
    ]
    for i, edge in enumerate(edges[:n]):
        x[i, :, :2] = edge[:, :2]  # the top two rows of the first images
    return x.to(dtype)


def labels(n: int, seed: int = 2) -> torch.Tensor:
    return torch.randint(0, CLASSES, (n,), generator=torch.Generator().manual_seed(seed))
