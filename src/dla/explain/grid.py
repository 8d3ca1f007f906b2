"""Image / heatmap / overlay grids of explanation maps (matplotlib, Agg), written atomically."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch

from dla.report.plots import plt, save_figure

TITLES = {"cam": "CAM", "gradcam": "Grad-CAM", "saliency": "saliency", "smoothgrad": "SmoothGrad",
          "integrated_gradients": "Integrated Gradients", "gradcam++": "Grad-CAM++", "layercam": "LayerCAM",
          "scorecam": "Score-CAM"}
CMAP = "jet"  # the CAM / Grad-CAM papers' colormap: red = strong evidence, blue = none
ALPHA = 0.5  # weight of the heatmap in the overlay


def overlay(image: torch.Tensor, heat: torch.Tensor, alpha: float = ALPHA, cmap: str = CMAP) -> np.ndarray:
    """(C, H, W) image in [0, 1] and (H, W) map in [0, 1] -> (H, W, 3) RGB: the colormapped map blended over."""
    rgb = to_rgb(image)
    coloured = matplotlib.colormaps[cmap](heat.detach().cpu().float().numpy())[..., :3]  # (H, W, 3)
    return (1 - alpha) * rgb + alpha * coloured


def to_rgb(image: torch.Tensor) -> np.ndarray:  # (C, H, W) in [0, 1] -> (H, W, 3); grey images repeated
    img = image.detach().cpu().float().clamp(0, 1)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return img[:3].permute(1, 2, 0).numpy()


def plot_explanations(images: torch.Tensor, maps: Mapping[str, torch.Tensor], true: Sequence[int],
                      pred: Sequence[int], classes: Sequence[str], path: Path, title: str = "",
                      rows: int = 8) -> Path:
    """One row per image: the image (true / predicted label), then a heatmap and an overlay per method.

    images (N, C, H, W) in [0, 1]; maps: method name -> (N, H, W) in [0, 1]. More than `rows` images wrap
    into side-by-side blocks of `rows`, so 16 images make an 8-row grid instead of a 16-row strip.
    """
    n = images.shape[0]
    per_image = 1 + 2 * len(maps)
    n_rows, blocks = min(n, rows), math.ceil(n / rows)
    fig, axes = plt.subplots(n_rows, blocks * per_image, figsize=(1.3 * blocks * per_image, 1.45 * n_rows + 0.5),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    grey = images.shape[1] == 1
    for i in range(n):
        r, c = i % rows, (i // rows) * per_image
        ax = axes[r, c]
        ax.imshow(to_rgb(images[i]), cmap="gray" if grey else None, interpolation="nearest")
        ok = int(true[i]) == int(pred[i])
        ax.set_title(f"true: {classes[int(true[i])]}\npred: {classes[int(pred[i])]}", fontsize=7,
                     color="tab:green" if ok else "tab:red")
        for j, (name, m) in enumerate(maps.items()):
            heat_ax, over_ax = axes[r, c + 1 + 2 * j], axes[r, c + 2 + 2 * j]
            heat_ax.imshow(m[i].detach().cpu().float().numpy(), cmap=CMAP, vmin=0, vmax=1, interpolation="nearest")
            over_ax.imshow(overlay(images[i], m[i]), interpolation="nearest")
            if r == 0:
                label = TITLES.get(name, name)
                heat_ax.set_title(f"{label}\nheatmap", fontsize=8)
                over_ax.set_title(f"{label}\noverlay", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return path
