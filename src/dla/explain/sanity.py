"""The model-randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

An explanation that explains the model must change when the model does. The cascading check re-initialises
the learnt layers one at a time from the head down (the head first, then the layer below it as well, ...), and
after each step compares every method's maps with the trained model's by Spearman rank correlation, per image.
A map that stays correlated as the weights it should depend on are destroyed (as the paper found for Guided
Backprop) is an edge detector, not an explanation; a faithful one falls towards 0 once the head is random.

Layers: the modules that hold weights of their own (conv, linear, and normalisation layers with affine
parameters), re-initialised with their own `reset_parameters` under a fixed seed; BatchNorm running statistics are
reset with them. The model itself is never modified: the cascade runs on a copy.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn


def ranks(v: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N,) float64 ranks, ties given their average rank (what Spearman's coefficient needs: a ReLU map
    has many equal zeros)."""
    sorted_v, order = v.sort()
    _, inverse, counts = torch.unique_consecutive(sorted_v, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0)
    average = (ends - counts + ends - 1).double() / 2  # (groups,): mean of the 0-based ranks of each group
    out = torch.empty(v.numel(), dtype=torch.float64)
    out[order] = average[inverse]
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, ...) and (B, ...) -> (B,) Spearman rank correlation per sample; NaN where a map is flat (no order)."""
    out = []
    for u, v in zip(a.flatten(1), b.flatten(1), strict=True):
        ru, rv = ranks(u) - (u.numel() - 1) / 2, ranks(v) - (v.numel() - 1) / 2  # centred ranks
        den = (ru.square().sum() * rv.square().sum()).sqrt()
        out.append(ru @ rv / den if den > 0 else torch.tensor(math.nan, dtype=torch.float64))
    return torch.stack(out)


def cascade_layers(model: nn.Module) -> list[str]:
    """The learnt layers, from the head down: modules with parameters of their own and a `reset_parameters`."""
    names = [n for n, m in model.named_modules()
             if n and any(True for _ in m.parameters(recurse=False)) and callable(getattr(m, "reset_parameters", None))]
    return names[::-1]


def cascading_randomisation(model: nn.Module, maps_of: Callable[[nn.Module], dict[str, torch.Tensor]],
                            layers: Sequence[str] | None = None, seed: int = 0) -> dict[str, list[float]]:
    """{method: [mean Spearman correlation with the trained maps after randomising layers[:1], layers[:2], ...]},
    with NaNs (flat maps) left out of the mean. `maps_of(model) -> {method: (B, H, W)}` computes the maps."""
    return {m: [nan_mean(rho) for rho in steps] for m, steps in cascade_spearman(model, maps_of, layers, seed).items()}


def nan_mean(rho: torch.Tensor) -> float:
    """The mean of the defined correlations (a flat map has none), NaN if there is none."""
    kept = rho[~rho.isnan()]
    return float(kept.mean()) if len(kept) else math.nan


def cascade_spearman(model: nn.Module, maps_of: Callable[[nn.Module], dict[str, torch.Tensor]],
                     layers: Sequence[str] | None = None, seed: int = 0) -> dict[str, list[torch.Tensor]]:
    """{method: [(B,) Spearman correlation per image after randomising layers[:1], layers[:2], ...]}: the cascade
    of `cascading_randomisation` before the mean over images."""
    layers = cascade_layers(model) if layers is None else list(layers)
    trained = maps_of(model)
    randomised = copy.deepcopy(model)
    modules = dict(randomised.named_modules())
    curves: dict[str, list[torch.Tensor]] = {m: [] for m in trained}
    with torch.random.fork_rng(devices=[]):  # the caller's RNG stream is left as it was
        torch.manual_seed(seed)
        for name in layers:
            modules[name].reset_parameters()  # BatchNorm: running statistics and affine parameters
            for method, maps in maps_of(randomised).items():
                curves[method].append(spearman(trained[method], maps))
    return curves
