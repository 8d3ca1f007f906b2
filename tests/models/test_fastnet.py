"""fastnet: the whitening stem really whitens, and a restored net gets its filters from the checkpoint."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from dla.models import ModelInputs, build_model
from dla.models.fastnet import PATCH, FastNetConfig, whitening_filters


def _correlated_images(n: int = 400) -> torch.Tensor:
    """Smooth colour images (N, 3, 32, 32) in [0, 1]: neighbouring pixels and channels strongly correlated."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, 1, 8, 8, generator=g)
    tint = torch.rand(n, 3, 1, 1, generator=g)
    return (F.interpolate(coarse, size=32, mode="bilinear") * (0.5 + 0.5 * tint)).clamp(0, 1)


def test_whitened_patches_have_identity_covariance() -> None:
    x = _correlated_images()
    w = whitening_filters(x, eps=1e-8)  # (24, 3, 2, 2): 12 filters and their negatives
    assert w.shape == (2 * 3 * PATCH * PATCH, 3, PATCH, PATCH)
    torch.testing.assert_close(w[12:], -w[:12])
    out = F.conv2d(x.double(), w[:12].double())  # (N, 12, 31, 31)
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    cov = torch.cov(flat.T)
    torch.testing.assert_close(cov, torch.eye(12, dtype=torch.float64), atol=1e-2, rtol=0)
    # The raw patches were far from white: the test would fail without the stem.
    raw = F.unfold(x, PATCH).transpose(1, 2).reshape(-1, 12)
    assert torch.cov(raw.T).diagonal().max() < 0.2 and torch.corrcoef(raw.T)[0, 1] > 0.9


def test_stem_comes_from_the_sample_and_travels_in_the_state_dict() -> None:
    x = (_correlated_images(200) * 255).to(torch.uint8)
    inputs = ModelInputs((3, 32, 32), 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    fitted = build_model(FastNetConfig(), dataclasses.replace(inputs, sample=x)).eval()
    assert fitted.whiten_weight.abs().sum() > 0
    restored = build_model(FastNetConfig(), inputs).eval()  # as `dla ood` / `dla attack` rebuild it
    assert restored.whiten_weight.abs().sum() == 0
    restored.load_state_dict(fitted.state_dict())
    probe = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(restored(probe), fitted(probe))
    assert not any(p is fitted.whiten_weight for p in fitted.parameters())  # frozen: not trained
