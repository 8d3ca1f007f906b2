"""Plots of `gradflow.csv`: one panel per run, side by side, on shared scales (plain vs residual).

- `gradflow_layers.png`: gradient norm vs layer index (input -> output) at a few points of training;
- `gradflow_heatmap.png`: log10 gradient norm and log10 update/weight ratio, layer x step;
- `gradflow_first_layer.png`: the first conv layer's gradient norm over training, all runs on one axis.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dla.report.plots import plt, save_figure


@dataclass
class GradFlow:
    steps: np.ndarray  # (S,)
    names: list[str]  # (L,) input -> output
    grad: np.ndarray  # (S, L) gradient norms
    ratio: np.ndarray  # (S, L) update / weight norm ratios


def read_gradflow(path: Path) -> GradFlow:
    """Rows -> dense arrays; a step recorded twice (a resumed run) keeps its last rows."""
    cells: dict[tuple[int, int], tuple[float, float]] = {}
    names: dict[int, str] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            step, layer = int(row["step"]), int(row["layer"])
            cells[step, layer] = (float(row["grad_norm"]), float(row["update_ratio"]))
            names[layer] = row["name"]
    steps = sorted({s for s, _ in cells})
    layers = sorted(names)
    grad = np.full((len(steps), len(layers)), np.nan)
    ratio = np.full_like(grad, np.nan)
    for (s, layer), (g, r) in cells.items():
        grad[steps.index(s), layer], ratio[steps.index(s), layer] = g, r
    return GradFlow(np.array(steps), [names[i] for i in layers], grad, ratio)


def _log10(a: np.ndarray) -> np.ndarray:
    return np.log10(np.maximum(a, 1e-12))


def plot_run_gradflow(run_path: Path, gradflow_csv: Path, plots: Path) -> list[Path]:
    """The figures of one run's gradflow.csv into its plots folder, if it recorded one (any task)."""
    return plot_gradflow([(run_path.name, read_gradflow(gradflow_csv))], plots) if gradflow_csv.is_file() else []


def plot_gradflow(runs: Sequence[tuple[str, GradFlow]], folder: Path) -> list[Path]:
    """Write the three figures for `runs` (label, data) into `folder`; returns their paths."""
    runs = [(label, g) for label, g in runs if len(g.steps)]
    if not runs:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    n = len(runs)
    out = [folder / "gradflow_layers.png", folder / "gradflow_heatmap.png", folder / "gradflow_first_layer.png"]

    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 3.8), sharey=True, squeeze=False, layout="constrained")
    for ax, (label, g) in zip(axes[0], runs, strict=True):
        picks = np.unique(np.linspace(0, len(g.steps) - 1, min(5, len(g.steps))).round().astype(int))
        cmap = plt.get_cmap("viridis")
        for j, i in enumerate(picks):
            ax.plot(np.arange(len(g.names)), g.grad[i], marker="o", ms=2, lw=1.2,
                    color=cmap(j / max(len(picks) - 1, 1)), label=f"step {g.steps[i]}")
        ax.set_yscale("log")
        ax.set_xlabel("layer (input -> output)")
        ax.set_title(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("gradient norm ||dL/dW||")
    save_figure(fig, out[0])

    fig, axes = plt.subplots(2, n, figsize=(5.5 * n, 7), squeeze=False, layout="constrained")
    for row, (field, what) in enumerate((("grad", "log10 ||dL/dW||"), ("ratio", "log10 update / weight"))):
        values = [_log10(getattr(g, field)) for _, g in runs]
        lo = min(np.nanpercentile(v, 1) for v in values)
        hi = max(np.nanpercentile(v, 99) for v in values)
        for col, ((label, g), v) in enumerate(zip(runs, values, strict=True)):
            ax = axes[row][col]
            im = ax.imshow(v.T, aspect="auto", origin="lower", cmap="magma", vmin=lo, vmax=hi,
                           extent=(g.steps[0], g.steps[-1], -0.5, len(g.names) - 0.5))
            ax.set_title(f"{label}: {what}", fontsize=9)
            ax.set_xlabel("step")
            ax.set_ylabel("layer")
        fig.colorbar(im, ax=list(axes[row]), shrink=0.9)
    save_figure(fig, out[1])

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for label, g in runs:
        ax.plot(g.steps, g.grad[:, 0], lw=1.3, label=f"{label}: {g.names[0]}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("first layer gradient norm")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, out[2])
    return out
