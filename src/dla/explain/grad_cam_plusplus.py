"""Grad-CAM++ (Chattopadhay, Sarkar, Howlader & Balasubramanian, "Grad-CAM++: Improved Visual Explanations for
Deep Convolutional Networks", WACV 2018).

Grad-CAM weighs a channel by its mean gradient, so one strong small region and many weak ones count alike.
Grad-CAM++ weighs each location's positive gradient by alpha (the paper's eq. 19, the higher derivatives of
an exponential score reduced to powers of the first, g = d y_c / d A_k(i, j)):

    alpha_k(i, j) = g^2 / (2 g^2 + sum_ab A_k(a, b) g^3 + eps)      (0 where g = 0)
    w_k           = sum_ij ReLU(g) alpha_k(i, j)
    M_c           = ReLU( sum_k w_k A_k )                          (the ReLU is the shared template's)

eps = 1e-6 keeps the 0 / 0 of locations without gradient finite, as pytorch-grad-cam does (its
grad_cam_plusplus.py, the reference of tests/explain/test_references_cams.py). Layers: as Grad-CAM's.
"""

from __future__ import annotations

import torch

from dla.explain.base import register_method
from dla.explain.grad_cam import GradCAM, layer_gradients

EPS = 1e-6


@register_method("gradcam++", "Grad-CAM++ (Chattopadhay et al. 2018): a layer's maps weighted by positive "
                              "gradients with per-location weights; default layer: Grad-CAM's")
class GradCAMPlusPlus(GradCAM):
    def layer_map(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        acts, g = layer_gradients(self.model, self.layer_name, self.layer, x, target)  # 2 x (B, C, h, w)
        total = acts.sum(dim=(2, 3), keepdim=True)  # (B, C, 1, 1): sum_ab A_k(a, b)
        g2 = g * g
        alpha = torch.where(g != 0, g2 / (2 * g2 + total * g2 * g + EPS), torch.zeros_like(g))  # (B, C, h, w)
        weights = (g.clamp_min(0) * alpha).sum(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        return (weights * acts).sum(dim=1)  # (B, h, w)
