"""How much of the model's confidence an explanation map keeps: Average Drop and Increase in Confidence.

Chattopadhay et al. (2018, Grad-CAM++, section 5.1; pytorch-grad-cam's "CAM multiply image confidence change"):
the map E (B, H, W) in [0, 1] masks the image, x * E on every channel (a pixel the map calls irrelevant turns
black), and the model's softmax probability of the explained class c is read on both, Y = p_c(x), O = p_c(x * E):

- average_drop = mean_i max(0, Y_i - O_i) / Y_i: the confidence lost when only the map's region is shown
  (0 = none lost; lower is better);
- increase = mean_i [O_i > Y_i]: the fraction of images the map's region alone convinces *more* than the whole
  image (higher is better).

They are numbers per method and run, so a sweep's runs can be compared as mean ± std (`dla explain SWEEP_DIR`).

Deletion and insertion (Petsiuk, Das & Saenko, "RISE", BMVC 2018): the pixels are ranked by the map, most
important first, and uncovered in `steps` equal fractions. Deletion replaces them, top first, with black (0): a
faithful map makes p_c fall at once, so a low area under the curve p_c(fraction deleted) is good. Insertion starts
from a blurred copy (the RISE paper's substrate: it carries no class evidence but is not out of distribution like
a black image) and puts the top pixels back first: a high area is good. The area is the trapezoid rule on [0, 1];
`deletion_insertion` gives one per image, so a run reports mean ± std over its images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dla.nn.modes import eval_frozen

KEYS = ("average_drop", "increase")
HEADERS = {"average_drop": "Average drop (lower is better)", "increase": "Increase in confidence"}


@torch.inference_mode()
def confidence_change(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor
                      ) -> dict[str, float]:
    """Average drop and increase in confidence of `maps` (B, H, W) in [0, 1] for images x (B, C, H, W) in [0, 1] and
    explained classes `target` (B,); the model in eval mode (restored after)."""
    idx = torch.arange(x.shape[0])
    with eval_frozen(model):
        y = torch.softmax(model(x).float(), dim=1)[idx, target]  # (B,): confidence on the whole image
        o = torch.softmax(model(x * maps.unsqueeze(1)).float(), dim=1)[idx, target]  # (B,): on the map's region
    drop = (y - o).clamp_min(0) / y.clamp_min(1e-12)
    return {"average_drop": float(drop.mean()), "increase": float((o > y).float().mean())}


CURVE_KEYS = ("deletion_auc", "insertion_auc")
CURVE_HEADERS = {"deletion_auc": "Deletion AUC (lower is better)", "insertion_auc": "Insertion AUC (higher is better)"}


def blurred(x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): a separable Gaussian blur, sigma H / 8 by default (RISE's 5 px at 224 px would
    leave a 32 px image recognisable); edges replicated."""
    sigma = sigma or x.shape[-1] / 8
    r = max(1, int(3 * sigma))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).expand(x.shape[1], 1, 1, -1)  # (C, 1, 1, 2r + 1): one kernel per channel
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k, groups=x.shape[1])  # along W
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.transpose(2, 3), groups=x.shape[1])  # along H


@torch.inference_mode()
def curve(model: nn.Module, start: torch.Tensor, end: torch.Tensor, maps: torch.Tensor, target: torch.Tensor,
          steps: int = 32) -> torch.Tensor:
    """p_c along the path that moves the pixels from `start` to `end` (both (B, C, H, W)), most important pixel
    (by `maps` (B, H, W)) first, in `steps` equal fractions: (B, steps + 1), from all-start to all-end."""
    b, _, h, w = start.shape
    order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)  # (B, HW): most important first
    # (B, HW): each pixel's place in that order (0 = most important)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=order.device).expand(b, -1))
    idx = torch.arange(b)
    probs = []
    with eval_frozen(model):
        for k in range(steps + 1):
            moved = (rank < round(k * h * w / steps)).view(b, 1, h, w)  # (B, 1, H, W): the top fraction k / steps
            p = torch.softmax(model(torch.where(moved, end, start)).float(), dim=1)  # (B, K)
            probs.append(p[idx, target])
    return torch.stack(probs, dim=1)  # (B, steps + 1)


def auc(probs: torch.Tensor) -> torch.Tensor:  # (B, S + 1) on an even grid of [0, 1] -> (B,), trapezoid rule
    return (probs.sum(dim=1) - (probs[:, 0] + probs[:, -1]) / 2) / (probs.shape[1] - 1)


def deletion_insertion(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor,
                       steps: int = 32) -> dict[str, torch.Tensor]:
    """Per image (B,): the deletion AUC (to black, lower is better) and the insertion AUC (from a blur, higher
    is better) of `maps` (B, H, W) for images x (B, C, H, W) in [0, 1] and explained classes `target` (B,)."""
    return {"deletion_auc": auc(curve(model, x, torch.zeros_like(x), maps, target, steps)),
            "insertion_auc": auc(curve(model, blurred(x), x, maps, target, steps))}
