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
    from dla.report.plots import plt, save_figure

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
    save_figure(fig, path)
    return path


def sanity_table(sanity: dict[str, Any], labels: dict[str, str]) -> str:
    from dla.report.tables import markdown_table

    layers = sanity["layers"]
    picks = sorted({0, len(layers) // 2, len(layers) - 1}) if layers else []  # head, middle, all
    header = ["Method", *(f"random to {layers[i]}" for i in picks)]
    body = [[labels[m], *(f"{rho[i]:.3f}" for i in picks)] for m, rho in sanity["spearman"].items()]
    return markdown_table(header, body)


# The ranking: every check of a run side by side, one row per method. "head" / "all": the cascade's first step
# (the head random) and its last (every learnt layer random).
RANK_KEYS = ("deletion_auc", "insertion_auc", "sanity_head", "sanity_all", "maps_per_s")
RANK_HEADERS = {"deletion_auc": "Deletion AUC ↓", "insertion_auc": "Insertion AUC ↑",
                "sanity_head": "Spearman, head random ↓", "sanity_all": "Spearman, all random ↓",
                "maps_per_s": "maps/s ↑"}


def sanity_per_image(rhos: dict[str, list[torch.Tensor]]) -> dict[str, dict[str, list[float]]]:
    """{method: {"head": [...], "all": [...]}}: the per-image correlations of the cascade's first and last
    steps, flat maps (NaN, no order to correlate) left out."""
    def kept(rho: torch.Tensor) -> list[float]:
        return rho[~rho.isnan()].tolist()

    return {m: {"head": kept(steps[0]), "all": kept(steps[-1])} for m, steps in rhos.items() if steps}


def ranking_values(results: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """{method: {key: values}} of one run's results: per image for the AUCs and correlations, one number for
    maps/s; only the keys the run computed (--metrics, --sanity)."""
    out: dict[str, dict[str, list[float]]] = {}
    for m, speed in results["maps_per_s"].items():
        row = out.setdefault(m, {})
        if "curves" in results:
            row.update({k: results["curves"][m][k] for k in ("deletion_auc", "insertion_auc")})
        if m in results.get("sanity", {}).get("per_image", {}):
            per_image = results["sanity"]["per_image"][m]
            row.update({"sanity_head": per_image["head"], "sanity_all": per_image["all"]})
        row["maps_per_s"] = [speed]
    return out


def run_means(values: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """One run's ranking values averaged over its images: what a sweep compares across runs."""
    import math
    import statistics

    return {m: {k: statistics.fmean(v) if v else math.nan for k, v in row.items()} for m, row in values.items()}


def ranking_table(rows: list[tuple[list[str], dict[str, list[float]]]], first: list[str]) -> str:
    """A Markdown table: `first` header cells, then mean ± std of each RANK_KEYS column present; a row is its
    leading cells and {key: values}. maps/s of a single run is one number."""
    from dla.report.tables import markdown_table, mean_std

    keys = [k for k in RANK_KEYS if any(k in v for _, v in rows)]

    def cell(k: str, v: list[float] | None) -> str:
        if not v:
            return ""
        m, s = mean_std(v)
        digits = 1 if k == "maps_per_s" else (4 if k.endswith("auc") else 3)
        return f"{m:.{digits}f}" if len(v) == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"

    body = [[*lead, *(cell(k, v.get(k)) for k in keys)] for lead, v in rows]
    return markdown_table([*first, *(RANK_HEADERS[k] for k in keys)], body)
