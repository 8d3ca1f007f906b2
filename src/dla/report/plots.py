"""Training curves, confusion matrices and sweep overlays as PNG (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display anywhere we run: CI, servers, GPU machines
import matplotlib.pyplot as plt
import numpy as np

from dla.io import atomic_write


def save_figure(fig: Any, path: Path) -> None:
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def _series(rows: Sequence[dict[str, Any]], split: str, metric: str) -> tuple[list[int], list[float]]:
    pts = [(r["epoch"], r[metric]) for r in rows if r["split"] == split and r.get(metric) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch, train vs val."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for split, style in (("train", "-"), ("val", "--")):
            x, y = _series(rows, split, metric)
            if x:
                ax.plot(x, y, style, marker="o", ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    save_figure(fig, path)


def draw_count_matrix(ax: Any, cm: np.ndarray, rows: Sequence[str], cols: Sequence[str], cmap: str,
                      annotate: bool, ticks: bool, aspect: str = "equal") -> None:
    """Counts (rows x cols) shaded by their row-normalised share, optionally written in and with tick labels."""
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap=cmap, vmin=0, vmax=1, aspect=aspect)
    if annotate:
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    if ticks:
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix with counts."""
    cm = np.asarray(cm)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * k, 0.8 + 0.5 * k))
    draw_count_matrix(ax, cm, classes, classes, "Blues", annotate=k <= 20, ticks=k <= 20)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    save_figure(fig, path)


def plot_overlay(groups: Sequence[tuple[str, Sequence[Sequence[dict[str, Any]]]]], split: str, metric: str,
                 path: Path, title: str = "", styles: Sequence[tuple[int, int]] | None = None) -> None:
    """One line per config (mean over its seeds, band = ± std) of `split/metric` per epoch.

    `styles[i] = (colour index, line-style index)`: a sweep colours by its first axis and dashes by its second,
    so 'depth 16, plain' and 'depth 16, residual' share a colour and differ in dash.
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    styles = styles or [(i, 0) for i in range(len(groups))]
    n_colours = max((c for c, _ in styles), default=0) + 1
    cmap = plt.get_cmap("tab10" if n_colours <= 10 else "viridis")
    dashes = ["-", "--", ":", "-."]
    for (label, runs), (c, d) in zip(groups, styles, strict=True):
        series = [dict(zip(*_series(rows, split, metric), strict=True)) for rows in runs]
        epochs = sorted(set().union(*series))
        if not epochs:
            continue
        mean = np.array([np.mean([s[e] for s in series if e in s]) for e in epochs])
        std = np.array([np.std([s[e] for s in series if e in s]) for e in epochs])
        color = cmap(c % 10) if n_colours <= 10 else cmap(c / max(n_colours - 1, 1))
        ax.plot(epochs, mean, dashes[d % len(dashes)], label=label, color=color, lw=1.6)
        ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.12)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{split} {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(groups) > 8 else 1, loc="best")
    ax.set_title(title)
    save_figure(fig, path)
