"""Integrated Gradients and SmoothGrad (and its variants) equal captum's on the same model, inputs and noise."""

from __future__ import annotations

import importlib

import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

from dla.explain import ExplainError, explain, integrated_gradients, smoothgrad
from dla.explain.base import normalise
from dla.explain.smoothgrad import SmoothGrad

from .nets import images, registry_cnn

F64 = torch.float64
TIGHT = {"rtol": 1e-9, "atol": 1e-12}
ig_module = importlib.import_module("dla.explain.integrated_gradients")  # the package's name is the function
pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")


@pytest.mark.parametrize(("steps", "baseline"), [(16, 0.0), (7, 0.5)])
def test_integrated_gradients_equal_captum(steps: int, baseline: float, monkeypatch: pytest.MonkeyPatch) -> None:
    model = registry_cnn(dtype=F64)
    x = images(4, dtype=F64)
    target = torch.tensor([0, 3, 9, 3])
    want = IntegratedGradients(model).attribute(x, baselines=baseline, target=target, n_steps=steps,
                                                method="gausslegendre").sum(dim=1)  # (B, H, W)

    # captum rounds the quadrature weights to float32 (`torch.tensor(step_sizes).float()`), ours stay float64:
    # the two agree to ~1e-5 relative, and exactly once ours are rounded the same way.
    _, raw64 = integrated_gradients(model, x, target, steps=steps, baseline=baseline, raw=True)
    torch.testing.assert_close(raw64, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))
    nodes, weights = ig_module.gauss_legendre(steps)
    monkeypatch.setattr(ig_module, "gauss_legendre",
                        lambda n: (nodes, torch.tensor(weights).float().double().tolist()))
    maps, raw = integrated_gradients(model, x, target, steps=steps, baseline=baseline, raw=True)

    torch.testing.assert_close(raw, want, **TIGHT)
    torch.testing.assert_close(maps, normalise(want.clamp_min(0)), **TIGHT)
    # chunking the path into forward passes of a few steps changes nothing
    torch.testing.assert_close(explain(model, x, "integrated_gradients", target, raw=True, steps=steps,
                                       baseline=baseline, chunk=3)[1], want, **TIGHT)


def test_integrated_gradients_are_complete() -> None:
    # sum_i IG_i = y_c(x) - y_c(baseline): the attributions account for the whole change of the score. On a
    # smooth (tanh) net the quadrature converges fast; a ReLU net's kinks would blur the check.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    model = model.to(F64).eval()
    x = images(3, dtype=F64, shape=(3, 8, 8))
    target = model(x).argmax(dim=1)
    _, raw = integrated_gradients(model, x, steps=32, baseline=0.2, raw=True)
    gap = (model(x) - model(torch.full_like(x, 0.2))).gather(1, target[:, None])[:, 0].detach()
    assert gap.abs().min() > 1e-3  # a change worth accounting for
    torch.testing.assert_close(raw.sum(dim=(1, 2)), gap, rtol=1e-8, atol=1e-10)


def captum_tunnel(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, draws: torch.Tensor, noise: float,
                  nt_type: str, monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    """captum's NoiseTunnel(Saliency) with `draws` (S, C, H, W) as its noise: captum repeats each image S times
    (repeat_interleave, row b * S + s) and adds torch.normal(0, stdev) to the stack, which we answer with ours."""
    s = draws.shape[0]
    injected = draws.repeat(x.shape[0], 1, 1, 1)  # (B * S, C, H, W): row b * S + s holds draw s
    monkeypatch.setattr(torch, "normal", lambda mean, std: mean + std * injected)
    out = NoiseTunnel(Saliency(model)).attribute(x, target=target, abs=True, nt_type=nt_type, nt_samples=s,
                                                 stdevs=noise)
    monkeypatch.undo()
    return out.amax(dim=1)  # (B, H, W)


@pytest.mark.parametrize("variant", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_smoothgrad_equals_captum_noise_tunnel_on_the_same_noise(variant: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    model = registry_cnn(dtype=F64)
    x = images(3, dtype=F64)
    target = model(x).argmax(dim=1)
    method = SmoothGrad(model, samples=5, noise=0.2, seed=7, variant=variant)
    want = captum_tunnel(model, x, target, method.noise_draws(x), 0.2, variant, monkeypatch)

    maps, raw = smoothgrad(model, x, samples=5, noise=0.2, seed=7, variant=variant, raw=True)

    torch.testing.assert_close(raw, want, **TIGHT)
    torch.testing.assert_close(maps, normalise(want), **TIGHT)
    assert not torch.allclose(raw, smoothgrad(model, x, samples=5, noise=0.2, seed=8, variant=variant, raw=True)[1])
    # the noisy copies in passes of 2 draws, or all 5 at once: the same maps
    for chunk in (2, 5):
        torch.testing.assert_close(explain(model, x, "smoothgrad", samples=5, noise=0.2, seed=7, variant=variant,
                                           chunk=chunk, raw=True)[1], want, **TIGHT)


def test_smoothgrad_options_are_checked() -> None:
    with pytest.raises(ExplainError, match="unknown smoothgrad variant 'var'; use one of smoothgrad, smoothgrad_sq"):
        smoothgrad(registry_cnn(), images(1), variant="var")
    with pytest.raises(ExplainError, match="samples >= 1"):
        smoothgrad(registry_cnn(), images(1), samples=0)
    with pytest.raises(ExplainError, match="baseline must be a pixel value in"):
        integrated_gradients(registry_cnn(), images(1), baseline=2.0)
