"""The fully-convolutional view of a trained CNN: a class score per location of an image larger than it saw.

`dla.models.cnn.FullyConvolutional` turns the linear head into a 1x1 conv. We show it on 2x2 mosaics of test
images of four different classes: each quadrant's locations should vote for that quadrant's class, which is
a segmentation the network was never trained for, read off a classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import torch
import torch.nn.functional as F
from torch import nn

from dla.explain.base import ExplainError
from dla.explain.grid import to_rgb
from dla.report.plots import plt, save_figure


def fully_convolutional(model: nn.Module) -> nn.Module:
    from dla.models.cnn import CNN, FullyConvolutional

    if not isinstance(model, CNN):
        raise ExplainError(f"--classmap needs a CNN run (model cnn, resnet_cifar, resnet20, resnet56) whose head is a "
                           f"linear layer over pooled conv features; this run's model is {type(model).__name__}")
    return FullyConvolutional(model).eval()


def mosaics(x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n mosaics (n, C, 2H, 2W), each of four test images of four different classes, and their labels (n, 4)
    in reading order (top left, top right, bottom left, bottom right)."""
    picks: list[list[int]] = []
    used: set[int] = set()
    for _ in range(n):
        group: list[int] = []
        for i in range(len(y)):
            if i not in used and int(y[i]) not in {int(y[j]) for j in group}:
                group.append(i)
                if len(group) == 4:
                    break
        if len(group) < 4:
            break
        used.update(group)
        picks.append(group)
    if not picks:
        raise ExplainError("--classmap needs test images of at least 4 different classes")
    idx = torch.tensor(picks)  # (n, 4)
    tiles = x[idx]  # (n, 4, C, H, W)
    top = torch.cat([tiles[:, 0], tiles[:, 1]], dim=3)
    bottom = torch.cat([tiles[:, 2], tiles[:, 3]], dim=3)
    return torch.cat([top, bottom], dim=2), y[idx]


def classmap_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: Sequence[str], path: Path,
                 n: int = 4, title: str = "") -> Path:
    """x: test images (N, C, H, W) in [0, 1]. Writes mosaic | per-location argmax class | quadrant agreement."""
    fcn = fully_convolutional(model)
    tiles, labels = mosaics(x, y, n)
    with torch.inference_mode():
        scores = fcn(tiles)  # (n, K, h, w): a class score per location
    big = F.interpolate(scores, size=tiles.shape[-2:], mode="nearest")  # (n, K, 2H, 2W), each cell as a block
    votes = big.argmax(dim=1)  # (n, 2H, 2W)
    k = len(classes)
    cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20"]
    rows = tiles.shape[0]
    fig, axes = plt.subplots(rows, 2, figsize=(6, 3 * rows + 0.4), squeeze=False)
    for r in range(rows):
        axes[r, 0].imshow(to_rgb(tiles[r]), cmap="gray" if tiles.shape[1] == 1 else None, interpolation="nearest")
        axes[r, 0].set_title(" | ".join(classes[int(c)] for c in labels[r]), fontsize=8)
        colours = cmap(votes[r].numpy() % cmap.N)[..., :3]
        axes[r, 1].imshow(0.35 * to_rgb(tiles[r]) + 0.65 * colours, interpolation="nearest")
        present = sorted(set(votes[r].flatten().tolist()))
        handles = [matplotlib.patches.Patch(color=cmap(c % cmap.N), label=classes[c]) for c in present]
        axes[r, 1].legend(handles=handles, fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
        axes[r, 1].set_title(f"argmax class per location ({scores.shape[-2]}x{scores.shape[-1]} cells)", fontsize=8)
        for ax in axes[r]:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def quadrant_agreement(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n: int) -> float:
    """Fraction of mosaic locations whose argmax class is the class of the image in their quadrant."""
    tiles, labels = mosaics(x, y, n)
    with torch.inference_mode():
        votes = fully_convolutional(model)(tiles).argmax(dim=1)  # (n, h, w)
    h, w = votes.shape[-2:]
    # Each cell belongs to the quadrant its centre falls in; with an odd map size the middle row / column
    # straddles two quadrants and is not counted.
    rows, cols = (torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w  # centres in (0, 1)
    quadrant = (rows[:, None] > 0.5).long() * 2 + (cols[None, :] > 0.5).long()  # (h, w) in 0..3
    counted = (rows[:, None] != 0.5) & (cols[None, :] != 0.5)  # (h, w)
    truth = labels[:, quadrant]  # (n, h, w)
    return float((votes == truth)[:, counted].float().mean())
