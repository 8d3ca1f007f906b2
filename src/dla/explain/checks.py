"""`dla explain RUN --metrics / --sanity`: the evidence that a run's maps mean something, as tables and a plot.

- `--metrics`: deletion and insertion AUC of every method's maps (`dla.explain.faithfulness`), mean ± sample
  std over the explained test images;
- `--sanity`: the cascading model-randomisation check (`dla.explain.sanity`): mean Spearman rank correlation
  between each method's maps on the trained model and on copies with the layers randomised from the head down,
  written to explain/sanity.png.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from dla.explain.grid import TITLES

STEPS = 32  # deletion / insertion: the pixels move in 32 fractions of 1/32 of the image


def curve_scores(model: nn.Module, x: torch.Tensor, maps: dict[str, torch.Tensor], target: torch.Tensor
                 ) -> dict[str, dict[str, list[float]]]:
    """{method: {"deletion_auc": [per image], "insertion_auc": [per image]}} for images x (N, C, H, W)."""
    from dla.explain.faithfulness import deletion_insertion

    return {m: {k: v.tolist() for k, v in deletion_insertion(model, x, mp, target, STEPS).items()}
            for m, mp in maps.items()}


def curves_table(curves: dict[str, dict[str, list[float]]], labels: dict[str, str]) -> str:
    from dla.explain.faithfulness import CURVE_HEADERS, CURVE_KEYS
    from dla.report.tables import fmt_mean_std, markdown_table

    body = [[labels[m], *(fmt_mean_std("auc", v[k]) for k in CURVE_KEYS)] for m, v in curves.items()]
    return markdown_table(["Method", *(CURVE_HEADERS[k] for k in CURVE_KEYS)], body)


def plot_sanity(layers: list[str], curves: dict[str, list[float]], path: Path, title: str) -> Path:
    """`path`: each method's mean Spearman correlation (1 for the trained model) against the layers randomised."""
    from dla.report.plots import _save, plt

    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(layers) + 2), 3.6))
    steps = range(len(layers) + 1)
    for method, rho in curves.items():
        ax.plot(steps, [1.0, *rho], marker="o", ms=3, label=TITLES.get(method, method))
    ax.set_xticks(list(steps), ["trained", *layers], rotation=60, ha="right", fontsize=7)
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("randomised down to layer (cumulative, from the head)")
    ax.set_ylabel("Spearman rank correlation\nwith the trained maps")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return path


def sanity_table(sanity: dict[str, Any], labels: dict[str, str]) -> str:
    from dla.report.tables import markdown_table

    layers = sanity["layers"]
    picks = sorted({0, len(layers) // 2, len(layers) - 1}) if layers else []  # head, middle, all
    header = ["Method", *(f"random to {layers[i]}" for i in picks)]
    body = [[labels[m], *(f"{rho[i]:.3f}" for i in picks)] for m, rho in sanity["spearman"].items()]
    return markdown_table(header, body)
