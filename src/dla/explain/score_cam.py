"""Score-CAM (Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks",
CVPR workshops 2020): no gradients; each channel is weighted by how much the class score likes the image seen
through that channel's map.

For the layer's maps A (B, C, h, w):

    H_k = minmax( up(A_k) )                  bilinear to H x W (align_corners=True, as pytorch-grad-cam's
                                             UpsamplingBilinear2d), min-max per channel to [0, 1]
    s_k = y_c(x * H_k)                       one forward pass per channel: C masked copies of each image
    w   = softmax_k(s_k),  M_c = ReLU( sum_k w_k A_k )

The paper's increase in confidence s_k - y_c(baseline) differs from s_k by a constant per image, which the
softmax ignores. Costs C forward passes per image, run `chunk` masked copies at a time. Layers: Grad-CAM's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dla.explain.base import ExplainError, capture, check_range, class_scores, layer_maps, register_method
from dla.explain.grad_cam import GradCAM


@register_method("scorecam", "Score-CAM (Wang et al. 2020): a layer's maps weighted by the softmax of the class "
                             "score of the image masked by each map; no gradients; default layer: Grad-CAM's")
class ScoreCAM(GradCAM):
    scores_checked = True  # the target is checked on the method's own forward pass: see Explainer

    def __init__(self, model: nn.Module, layer: str | nn.Module | None = None, chunk: int = 64) -> None:
        super().__init__(model, layer)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ExplainError(f"scorecam: chunk must be a positive number of masked images per pass; got {chunk!r}")
        self.chunk = chunk

    def layer_map(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            with capture(self.layer) as outputs:
                check_range(target, class_scores(self.model, x).shape[1])
            if len(outputs) != 1:
                raise ExplainError(f"layer {self.layer_name!r} ran {len(outputs)} times in one forward pass; "
                                   "Score-CAM needs a layer that runs exactly once (pick another with layer=NAME)")
            acts = layer_maps(self.model, self.layer_name, outputs[0])  # (B, C, h, w)
            masks = F.interpolate(acts, size=x.shape[-2:], mode="bilinear", align_corners=True)  # (B, C, H, W)
            lo, hi = masks.amin(dim=(2, 3), keepdim=True), masks.amax(dim=(2, 3), keepdim=True)
            masks = (masks - lo) / (hi - lo + 1e-8)
            weights = torch.softmax(self.masked_scores(x, masks, target), dim=1)  # (B, C)
            return torch.einsum("bc,bchw->bhw", weights, acts)  # (B, h, w)

    def masked_scores(self, x: torch.Tensor, masks: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, C) scores y_c(x_b * H_bk): image b seen through each of its C masks, `chunk` images per pass."""
        rows = []
        for b in range(x.shape[0]):  # one image at a time: a sample's weights never see the rest of the batch
            copies = x[b : b + 1] * masks[b].unsqueeze(1)  # (C, Cin, H, W)
            rows.append(torch.cat([class_scores(self.model, part)[:, target[b]]
                                   for part in copies.split(self.chunk)]))  # (C,)
        return torch.stack(rows)  # (B, C)
