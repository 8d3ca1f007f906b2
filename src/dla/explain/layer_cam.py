"""LayerCAM (Jiang, Zhang, Hou, Cheng & Wei, "LayerCAM: Exploring Hierarchical Class Activation Maps for
Localization", IEEE TIP 2021).

Instead of one weight per channel (Grad-CAM's spatial mean), every location keeps its own positive gradient:

    M_c(i, j) = ReLU( sum_k ReLU(d y_c / d A_k(i, j)) A_k(i, j) )     (the outer ReLU is the shared template's)

so shallower layers, where a channel's mean gradient washes out, still give a sharp map. Layers: as Grad-CAM's.
"""

from __future__ import annotations

import torch

from dla.explain.base import register_method
from dla.explain.grad_cam import GradCAM, layer_gradients


@register_method("layercam", "LayerCAM (Jiang et al. 2021): a layer's maps weighted location by location by "
                             "their positive gradients; default layer: Grad-CAM's")
class LayerCAM(GradCAM):
    def layer_map(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        acts, grads = layer_gradients(self.model, self.layer_name, self.layer, x, target)  # 2 x (B, C, h, w)
        return (grads.clamp_min(0) * acts).sum(dim=1)  # (B, h, w)
