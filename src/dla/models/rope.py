"""Rotary position embeddings (RoFormer, Su et al. 2021), in real arithmetic.

Each head vector of size hs is read as hs / 2 pairs (x[2i], x[2i + 1]); the pair at position m is rotated by
the angle m * theta_i, with theta_i = base^(-2i / hs). A query at position m and a key at position n then meet
in the dot product through the angle (m - n) * theta_i only: attention sees relative positions, and nothing is
learned. Rotating pairs is multiplying complex numbers by e^(i m theta_i); tests/lm check exactly that.
"""

from __future__ import annotations

import torch


def rope_angles(head_size: int, max_positions: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of m * theta_i: two (max_positions, head_size / 2) float32 tables."""
    if head_size % 2:
        raise ValueError(f"rotary embeddings rotate pairs: the head size {head_size} must be even")
    theta = base ** (-torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)  # (hs / 2,)
    angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), theta)  # (P, hs / 2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, nh, T, hs) head vectors; `cos`, `sin` are the (T, hs / 2) rows of their positions."""
    pairs = x.float().unflatten(-1, (-1, 2))  # (B, nh, T, hs / 2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)  # (a + ib) * (cos + i sin)
    return rotated.flatten(-2).to(x.dtype)
