"""Figures of `dla attack`: accuracy against eps, and original / adversarial / difference image grids (Agg, atomic)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dla.report.plots import plt, save_figure


def fmt_eps(eps: float) -> str:
    """0.1 -> '0.1', 8/255 -> '8/255': the short decimal when it is exact, else grey levels, else 4 digits."""
    if eps == 0:
        return "0"
    short = f"{eps:.4g}"
    if abs(float(short) - eps) <= 1e-6 * eps:  # exact up to float32 rounding (a measured perturbation)
        return short
    levels = eps * 255
    if abs(levels - round(levels)) < 1e-5:  # float32 pixels: 8/255 * 255 = 8.0000001
        return f"{round(levels)}/255"
    return short


def plot_accuracy_vs_eps(series: Sequence[tuple[str, Sequence[float], Sequence[float], Sequence[float]]],
                         path: Path, title: str = "", ylabel: str = "accuracy") -> Path:
    """One line per (label, eps, mean, std); std bands are drawn where any std is > 0 (several seeds)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    all_eps: list[float] = []
    for label, eps, mean, std in series:
        x, m, s = np.asarray(eps, dtype=float), np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
        (line,) = ax.plot(x, m, marker="o", ms=4, label=label)
        if np.any(s > 0):
            ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.2, lw=0)
        all_eps.extend(eps)
    ticks = sorted(set(all_eps))
    ax.set_xticks(ticks, [fmt_eps(e) for e in ticks], rotation=45 if len(ticks) > 6 else 0)
    ax.set_xlabel("eps (L_inf, pixel units)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if len(series) > 1 or series[0][0]:
        ax.legend()
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)
    return path


def _rgb(image: torch.Tensor) -> np.ndarray:  # (C, H, W) in [0, 1] -> (H, W, 3)
    img = image.detach().cpu().float().clamp(0, 1)
    return (img.expand(3, -1, -1) if img.shape[0] == 1 else img[:3]).permute(1, 2, 0).numpy()


def amplified(diff: torch.Tensor) -> np.ndarray:
    """(C, H, W) perturbation -> (H, W, 3) in [0, 1]: 0.5 + 0.5 * diff / max|diff|, so the largest change fills the
    range (grey = unchanged, white = brightened, black = darkened; per channel for colour images)."""
    peak = float(diff.abs().max())
    return _rgb(0.5 + 0.5 * diff / peak) if peak > 0 else _rgb(torch.full_like(diff, 0.5))


def plot_attack_grid(x: torch.Tensor, adv: Sequence[tuple[float, torch.Tensor, torch.Tensor]], y: torch.Tensor,
                     pred: torch.Tensor, classes: Sequence[str], path: Path, title: str = "",
                     target: torch.Tensor | None = None) -> Path:
    """One row per image: the original (true / predicted label), then per eps the adversarial image (its predicted
    label, red where the attack succeeded) and the difference amplified to the full range.

    x (N, C, H, W) in [0, 1]; adv: (eps, x_adv (N, C, H, W), pred_adv (N,)) per eps; target (N,) for a targeted
    attack, whose success is reaching the target rather than leaving the true class.
    """
    n, cols = x.shape[0], 1 + 2 * len(adv)
    fig, axes = plt.subplots(n, cols, figsize=(1.35 * cols, 1.5 * n + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        true, p0 = int(y[i]), int(pred[i])
        ax = axes[i, 0]
        ax.imshow(_rgb(x[i]), interpolation="nearest")
        ax.set_title(f"true: {classes[true]}\npred: {classes[p0]}", fontsize=7,
                     color="tab:green" if p0 == true else "tab:red")
        for j, (eps, x_adv, p_adv) in enumerate(adv):
            pa = int(p_adv[i])
            won = pa == int(target[i]) if target is not None else pa != true
            im_ax, d_ax = axes[i, 1 + 2 * j], axes[i, 2 + 2 * j]
            im_ax.imshow(_rgb(x_adv[i]), interpolation="nearest")
            head = f"eps {fmt_eps(eps)}\n" if i == 0 else ""
            im_ax.set_title(f"{head}pred: {classes[pa]}", fontsize=7, color="tab:red" if won else "tab:green")
            diff = x_adv[i].float() - x[i].float()
            d_ax.imshow(amplified(diff), interpolation="nearest")
            peak = float(diff.abs().max())
            d_ax.set_title(f"{'difference' + chr(10) if i == 0 else ''}max {fmt_eps(peak) if peak else '0'}",
                           fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return path
