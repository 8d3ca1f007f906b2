"""Explanations of a classifier's decisions as maps over the image: CAM, Grad-CAM, Grad-CAM++, LayerCAM, Score-CAM,
gradient saliency, SmoothGrad and Integrated Gradients.

    maps = dla.explain.grad_cam(model, x)                     # (B, H, W) in [0, 1], predicted class
    maps, raw = dla.explain.cam(model, x, target=3, raw=True)  # raw: (B, h, w) layer maps, signed, unscaled

Every method takes images (B, C, H, W) in [0, 1] and returns maps of shape (B, H, W) at input resolution,
non-negative and min-max normalised per sample for display; with `raw=True` it returns `(maps, raw)`, the
layer map before ReLU, upsampling and normalisation. `target`: None (the predicted class), an int (that class
for every image) or a (B,) list/tensor. The model's modes and `requires_grad` flags are restored, no hook
outlives a call, `x` is not mutated, and sample i's map does not depend on the rest of the batch (see
`dla.explain.base`). `dla explain RUN_DIR` draws the image / heatmap / overlay grids of a trained run.

A new method is one `Explainer` subclass with `@register_method(name, description)`; it then works with
`explain(model, x, name)`, `dla explain --method name` and the shared contract tests.

`dla.explain.cam`, `.grad_cam`, `.saliency`, `.smoothgrad` and `.integrated_gradients` are the functions: they
shadow their modules of the same name, so reach a module's other names with `from dla.explain.grad_cam import
GradCAM` rather than `import dla.explain.cam`.
"""

from __future__ import annotations

import torch
from torch import nn

from dla.explain.base import (
    Explainer,
    ExplainError,
    Target,
    default_layer,
    explain,
    method_class,
    method_names,
    register_method,
)
from dla.explain.cam import CAM
from dla.explain.grad_cam import GradCAM
from dla.explain.grad_cam_plusplus import GradCAMPlusPlus
from dla.explain.integrated_gradients import IntegratedGradients
from dla.explain.layer_cam import LayerCAM
from dla.explain.saliency import Saliency
from dla.explain.score_cam import ScoreCAM
from dla.explain.smoothgrad import SmoothGrad

Maps = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # (B, H, W), or ((B, H, W), (B, h, w)) with raw=True


def cam(model: nn.Module, x: torch.Tensor, target: Target = None, *, raw: bool = False) -> Maps:
    """CAM (Zhou et al. 2016) of a GAP + linear network (`model.features`, `model.head`): (B, H, W) in [0, 1]."""
    return CAM(model)(x, target, raw)


def grad_cam(model: nn.Module, x: torch.Tensor, target: Target = None, layer: str | nn.Module | None = None, *,
             raw: bool = False) -> Maps:
    """Grad-CAM (Selvaraju et al. 2017) at `layer` (a name from `model.named_modules()`, a module, or None for
    the last conv layer): (B, H, W) in [0, 1]."""
    return GradCAM(model, layer)(x, target, raw)


def saliency(model: nn.Module, x: torch.Tensor, target: Target = None, *, samples: int = 0, noise: float = 0.15,
             seed: int = 0, raw: bool = False) -> Maps:
    """|d score / d input|, max over channels (Simonyan et al. 2014): (B, H, W) in [0, 1]. `samples` > 0 averages
    over that many noisy copies (SmoothGrad, noise std `noise` in pixel units, reproducible via `seed`)."""
    return Saliency(model, samples, noise, seed)(x, target, raw)


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: Target = None, *, steps: int = 32,
                         baseline: float = 0.0, raw: bool = False) -> Maps:
    """Integrated Gradients (Sundararajan et al. 2017) from a constant `baseline` image (0: black), `steps`
    Gauss-Legendre points, summed over channels: (B, H, W) in [0, 1]."""
    return IntegratedGradients(model, steps, baseline)(x, target, raw)


def smoothgrad(model: nn.Module, x: torch.Tensor, target: Target = None, *, samples: int = 25, noise: float = 0.15,
               seed: int = 0, variant: str = "smoothgrad", raw: bool = False) -> Maps:
    """SmoothGrad (Smilkov et al. 2017) or its variant smoothgrad_sq / vargrad: (B, H, W) in [0, 1]."""
    return SmoothGrad(model, samples, noise, seed, variant)(x, target, raw)


__all__ = [
    "CAM",
    "ExplainError",
    "Explainer",
    "GradCAM",
    "GradCAMPlusPlus",
    "IntegratedGradients",
    "LayerCAM",
    "Saliency",
    "ScoreCAM",
    "SmoothGrad",
    "cam",
    "default_layer",
    "explain",
    "grad_cam",
    "integrated_gradients",
    "method_class",
    "method_names",
    "register_method",
    "saliency",
    "smoothgrad",
]
