"""Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017).

For the activations A (B, C, h, w) of a chosen layer and the class score y_c (the logit, before softmax):

    alpha_ck = mean_ij d y_c / d A_k(i, j)        (global-average-pooled gradients: channel importance)
    M_c      = ReLU( sum_k alpha_ck A_k )          (the ReLU is applied by the shared template)

Default layer: the last conv layer (see `default_layer`); any module of the model can be named instead
(`layer="stages.2"`, a name from `model.named_modules()`), as long as its output is a (B, C, h, w) map that the
score depends on. On a GAP + linear network at the pooled layer alpha_ck = w_ck / (h * w), so Grad-CAM is CAM
divided by h * w (tests/explain/test_references.py checks it).
"""

from __future__ import annotations

import torch
from torch import nn

from dla.explain.base import (
    Explainer,
    ExplainError,
    capture,
    class_scores,
    find_layer,
    layer_maps,
    register_method,
    selected_scores,
)


@register_method("gradcam", "Grad-CAM (Selvaraju et al. 2017): a layer's maps weighted by their spatially "
                            "averaged class-score gradients; default layer: the last conv")
class GradCAM(Explainer):
    scores_checked = True  # the target is checked on the method's own forward pass: see Explainer

    def __init__(self, model: nn.Module, layer: str | nn.Module | None = None) -> None:
        super().__init__(model)
        self.layer_name, self.layer = find_layer(model, layer)

    def layer_map(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        acts, grads = layer_gradients(self.model, self.layer_name, self.layer, x, target)  # 2 x (B, C, h, w)
        alpha = grads.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1): channel importance for the class
        return (alpha * acts).sum(dim=1)  # (B, h, w)


def layer_gradients(model: nn.Module, name: str, layer: nn.Module, x: torch.Tensor, target: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's maps A (B, C, h, w), detached, and d (sum of the targets' scores) / d A (B, C, h, w): what
    every gradient-weighted CAM (Grad-CAM, Grad-CAM++, LayerCAM) reads. Tokens (B, N, C) are differentiated as
    they are and both tensors go through the model's `tokens_to_maps` (see `layer_maps`)."""
    # The input carries the graph: parameters are frozen, and without a leaf that needs a gradient autograd
    # would record nothing. A detached alias: the caller's tensor gets neither the flag nor a gradient.
    x = x.detach().requires_grad_(True)
    with capture(layer) as outputs:
        logits = class_scores(model, x)  # (B, K)
    if len(outputs) != 1:
        raise ExplainError(f"layer {name!r} ran {len(outputs)} times in one forward pass; a CAM method "
                           "needs a layer that runs exactly once (pick another with layer=NAME)")
    out = outputs[0]  # (B, C, h, w) or tokens (B, N, C)
    acts = layer_maps(model, name, out)  # checked before any backward pass
    if not out.requires_grad:
        raise ExplainError(f"layer {name!r} does not depend on the input (its output needs no "
                           "gradient); pick a layer on the path from the image to the scores")
    (grads,) = torch.autograd.grad(selected_scores(logits, target), out, allow_unused=True)
    if grads is None:
        raise ExplainError(f"the class scores do not depend on layer {name!r}; pick a layer on the "
                           "path from the image to the scores")
    return acts.detach(), layer_maps(model, name, grads)
