"""How much of the model's confidence an explanation map keeps: Average Drop and Increase in Confidence.

Chattopadhay et al. (2018, Grad-CAM++, section 5.1; pytorch-grad-cam's "CAM multiply image confidence change"):
the map E (B, H, W) in [0, 1] masks the image, x * E on every channel (a pixel the map calls irrelevant turns
black), and the model's softmax probability of the explained class c is read on both, Y = p_c(x), O = p_c(x * E):

- average_drop = mean_i max(0, Y_i - O_i) / Y_i: the confidence lost when only the map's region is shown
  (0 = none lost; lower is better);
- increase = mean_i [O_i > Y_i]: the fraction of images the map's region alone convinces *more* than the whole
  image (higher is better).

They are numbers per method and run, so a sweep's runs can be compared as mean ± std (`dla explain SWEEP_DIR`).
"""

from __future__ import annotations

import torch
from torch import nn

from dla.nn.modes import eval_frozen

KEYS = ("average_drop", "increase")
HEADERS = {"average_drop": "Average drop (lower is better)", "increase": "Increase in confidence"}


@torch.no_grad()
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
