"""Gradient-masking checks (Athalye et al. 2018; Carlini et al. 2019, "On evaluating adversarial robustness").

A defence that only hides its gradients (a non-differentiable input layer, saturated softmax, randomness) looks
robust to gradient attacks without being robust. The symptoms checked here, each a warning line when it fires:

- accuracy rises with eps: a larger ball contains the smaller one, so a working attack can only do better;
- an unbounded attack (eps = 1 in L_inf: the whole [0, 1] image cube) does not reach 0% accuracy;
- a much stronger attack (more steps and restarts) lowers accuracy by much: the standard one had not converged;
- a black-box attack beats a white-box one (Square, which never sees a gradient, below PGD-20): the gradients
  the white-box attack follows do not point where the model's decisions change (run with the Square suites).

The checks are evidence, not proof: a quiet check is no guarantee.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from dla.attacks.common import attack_mode, logits_of
from dla.attacks.pgd import pgd
from dla.attacks.plots import fmt_eps
from dla.attacks.square import square

Row = dict[str, Any]
PROBE = 64  # images the probing attacks run on (the first ones): enough to see 0% vs not, and cheap
MUCH = 0.05  # "helps much": a stronger attack lowers accuracy by more than 5 points (and more than 2 images)


def _slack(n: int) -> float:
    """Differences of up to this are noise: one image, since the random starts differ per eps."""
    return 1.0 / max(n, 1) + 1e-12


def non_monotone(rows: Sequence[Row]) -> list[str]:
    """A warning per column (each attack and the worst case) whose accuracy rises by more than one image with eps."""
    rows = sorted(rows, key=lambda r: r["eps"])
    warnings = []
    for col in [*rows[0]["attacks"], "worst"]:
        acc = [r["worst"] if col == "worst" else r["attacks"][col] for r in rows]
        for i in range(1, len(rows)):
            if acc[i] > min(acc[:i]) + _slack(rows[i]["n"]):
                j = acc.index(min(acc[:i]))
                warnings.append(f"WARNING (gradient masking?): {col} accuracy rises with eps, {100 * acc[j]:.2f}% "
                                f"at eps {fmt_eps(rows[j]['eps'])} but {100 * acc[i]:.2f}% at eps "
                                f"{fmt_eps(rows[i]['eps'])}")
                break
    return warnings


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad(), attack_mode(model):
        return float((logits_of(model, x).argmax(dim=1) == y).float().mean())


def unbounded(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 50) -> list[str]:
    """PGD at eps = 1 (any image in [0, 1]), from x itself: anything above 0% accuracy is a warning."""
    acc = _accuracy(model, pgd(model, x, y, 1.0, steps=steps, random_start=False), y)
    if acc > 0:
        return [f"WARNING (gradient masking?): an unbounded attack (PGD-{steps} at eps 1, the whole image cube) "
                f"leaves {100 * acc:.2f}% accuracy on the first {len(y)} images; it should reach 0%"]
    return []


def more_effort(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int = 0) -> list[str]:
    """PGD-10 against PGD-50 with 5 restarts at eps: a drop of more than MUCH (and 2 images) is a warning."""
    torch.manual_seed(seed)
    weak = _accuracy(model, pgd(model, x, y, eps, steps=10), y)
    torch.manual_seed(seed)
    strong = _accuracy(model, pgd(model, x, y, eps, steps=50, restarts=5), y)
    if weak - strong > max(MUCH, 2 / max(len(y), 1)):
        return [f"WARNING (gradient masking?): more steps and restarts help much at eps {fmt_eps(eps)}: PGD-10 "
                f"leaves {100 * weak:.2f}%, PGD-50 x 5 restarts {100 * strong:.2f}% on the first {len(y)} images"]
    return []


def square_beats_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int = 0,
                     queries: int = 5000) -> list[str]:
    """Square (black-box, `queries` queries) against PGD-20 at eps: Square lower by more than one image warns."""
    torch.manual_seed(seed)
    white = _accuracy(model, pgd(model, x, y, eps, steps=20), y)
    black = _accuracy(model, square(model, x, y, eps, queries, seed=seed), y)
    if white - black > _slack(len(y)):
        return [f"WARNING (gradient masking?): black-box Square ({queries} queries) beats white-box PGD-20 at eps "
                f"{fmt_eps(eps)}: {100 * black:.2f}% against {100 * white:.2f}% on the first {len(y)} images"]
    return []


def masking_warnings(model: nn.Module, x: torch.Tensor, y: torch.Tensor, rows: Sequence[Row],
                     seed: int = 0, square_queries: int | None = None) -> list[str]:
    """Every check: `rows` from `evaluate_suite`; x (B, C, H, W) in [0, 1], y (B,): the probes' images.

    `square_queries`: Square's budget for the black-box check; None skips it (a suite without Square).
    """
    x, y = x[:PROBE], y[:PROBE]
    eps_max = max(r["eps"] for r in rows)
    warnings = non_monotone(rows) if len(rows) > 1 else []
    warnings += unbounded(model, x, y)
    if eps_max > 0:
        warnings += more_effort(model, x, y, eps_max, seed)
        if square_queries is not None:
            warnings += square_beats_pgd(model, x, y, eps_max, seed, square_queries)
    return warnings
