"""OOD plots: ROC and PR curves of every score, ID vs OOD score histograms, sorted scores, where OOD inputs go.

Every figure is written atomically (`dla.report.plots.save_figure`), so a reader never sees half a PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from dla.ood.metrics import metrics as ood_metrics
from dla.ood.metrics import pr_curve, roc_curve
from dla.report.plots import draw_count_matrix, save_figure

Scores = Mapping[str, tuple[np.ndarray, np.ndarray]]  # method -> (ID scores, OOD scores)


def plot_roc(scores: Scores, path: Path, title: str = "") -> None:
    """ROC curves (ID positive: TPR = ID kept, FPR = OOD accepted) of every method on one axis, AUROC in the legend."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for method, (ids, oods) in scores.items():
        fpr, tpr, _ = roc_curve(ids, oods)
        m = ood_metrics(ids, oods)
        ax.plot(fpr, tpr, lw=1.6, label=f"{method} (AUROC {m['auroc']:.3f}, FPR95 {m['fpr95']:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.axhline(0.95, color="grey", lw=0.6, ls="--")  # the TPR at which FPR95 is read
    ax.set_xlabel("false positive rate (OOD accepted as ID)")
    ax.set_ylabel("true positive rate (ID kept)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def plot_pr(scores: Scores, path: Path, title: str = "") -> None:
    """Precision-recall curves with ID positive (AUPR-in, left) and OOD positive (AUPR-out, right)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, positive, key in zip(axes, ("id", "ood"), ("aupr_in", "aupr_out"), strict=True):
        for method, (ids, oods) in scores.items():
            precision, recall, _ = pr_curve(ids, oods, positive=positive)  # type: ignore[arg-type]
            ax.plot(recall, precision, lw=1.5, label=f"{method} ({key} {ood_metrics(ids, oods)[key]:.3f})")
        ax.set_xlabel(f"recall ({positive.upper()} positive)")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def plot_histogram(ids: np.ndarray, oods: np.ndarray, path: Path, method: str, ood_name: str, title: str = "") -> None:
    """ID and OOD score histograms on shared bins, each normalised to unit area (the sets differ in size)."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    lo, hi = float(min(ids.min(), oods.min())), float(max(ids.max(), oods.max()))
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 50)
    ax.hist(ids, bins=bins, density=True, alpha=0.55, label=f"ID ({len(ids)})", color="tab:blue")
    ax.hist(oods, bins=bins, density=True, alpha=0.55, label=f"{ood_name} ({len(oods)})", color="tab:red")
    ax.set_xlabel(f"{method} score (higher = more in-distribution)")
    ax.set_ylabel("density")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def plot_sorted(ids: np.ndarray, oods: np.ndarray, path: Path, method: str, ood_name: str, title: str = "") -> None:
    """Each set's scores sorted, against the fraction of the set: well-separated sets give curves far apart."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for values, label, color in ((ids, "ID", "tab:blue"), (oods, ood_name, "tab:red")):
        ax.plot(np.linspace(0, 1, len(values)), np.sort(values), lw=1.6, label=f"{label} ({len(values)})", color=color)
    ax.set_xlabel("fraction of the set (sorted by score)")
    ax.set_ylabel(f"{method} score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def plot_ood_predictions(pred: np.ndarray, classes: Sequence[str], path: Path, title: str = "",
                         true: np.ndarray | None = None, ood_classes: Sequence[str] | None = None) -> None:
    """Which ID classes the classifier maps OOD inputs to: a bar chart of predicted classes and, when the OOD set
    has meaningful labels (`true`, `ood_classes`), the OOD-class x predicted-ID-class matrix (row-normalised)."""
    k = len(classes)
    counts = np.bincount(pred, minlength=k)
    with_matrix = true is not None and ood_classes is not None
    fig, axes = plt.subplots(1, 2 if with_matrix else 1, figsize=(12 if with_matrix else 6, 4.2),
                             gridspec_kw={"width_ratios": [1, 1.2], "wspace": 0.4} if with_matrix else None)
    ax = axes[0] if with_matrix else axes
    ax.bar(range(k), counts / max(len(pred), 1), color="tab:red", alpha=0.8)
    ax.set_xticks(range(k), classes, rotation=45 if k > 5 else 0, ha="right" if k > 5 else "center", fontsize=8)
    ax.set_xlabel("predicted ID class")
    ax.set_ylabel(f"fraction of the {len(pred)} OOD inputs")
    ax.grid(alpha=0.3, axis="y")
    if with_matrix:
        assert true is not None and ood_classes is not None
        m = len(ood_classes)
        cm = np.zeros((m, k), dtype=np.int64)
        np.add.at(cm, (true, pred), 1)
        ax2 = axes[1]
        draw_count_matrix(ax2, cm, ood_classes, classes, "Reds", annotate=m * k <= 400, ticks=True, aspect="auto")
        ax2.set_xlabel("predicted ID class")
        ax2.set_ylabel("OOD class")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def plot_odin_grid(auroc: np.ndarray, temperatures: Sequence[float], eps_labels: Sequence[str],
                   chosen: tuple[int, int], path: Path, title: str = "") -> None:
    """Heatmap of validation AUROC over temperature (rows) x eps (columns), every cell annotated, the chosen one
    (the highest) boxed."""
    nt, ne = auroc.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * ne, 1.2 + 0.36 * nt))
    lo, hi = float(auroc.min()), float(auroc.max())
    im = ax.imshow(auroc, cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1e-6, aspect="auto")
    mid = (lo + hi) / 2
    for i in range(nt):
        for j in range(ne):
            ax.text(j, i, f"{auroc[i, j]:.4f}", ha="center", va="center", fontsize=7,
                    color="black" if auroc[i, j] > mid else "white",
                    fontweight="bold" if (i, j) == tuple(chosen) else "normal")
    i, j = chosen
    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2.2))
    ax.set_xticks(range(ne), list(eps_labels), fontsize=8)
    ax.set_yticks(range(nt), [f"{t:g}" for t in temperatures], fontsize=8)
    ax.set_xlabel("eps (input step, pixel units)")
    ax.set_ylabel("temperature T")
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02, label="validation AUROC")
    ax.set_title(title, fontsize=8)
    save_figure(fig, path)
