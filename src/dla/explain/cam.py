"""CAM (Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016).

For a network that ends in global average pooling + a linear layer, the class score is

    y_c = sum_k w_ck * mean_ij A_k(i, j) + b_c = mean_ij [ sum_k w_ck A_k(i, j) ] + b_c

so M_c(i, j) = sum_k w_ck A_k(i, j), the last conv maps weighted by the class's FC weights, is exactly how
much each location adds to the score: the class activation map. No gradient is needed. The architecture is
the requirement: the model must expose `features(x) -> (B, C, h, w)` and a `head` nn.Linear over their spatial
mean (dla's cnn / resnet models do). Anything else gets Grad-CAM, which reduces to this map (divided by h*w)
on such a network and works on any conv layer of any network.
"""

from __future__ import annotations

import torch
from torch import nn

from dla.explain.base import Explainer, ExplainError, check_range, register_method

NEEDS = ("cam needs a network ending in global average pooling + linear: a `features(x)` method returning the "
         "last conv maps (B, C, h, w) and a `head` nn.Linear applied to their spatial mean (dla's cnn and resnet "
         "models); use --method gradcam (any conv layer, any network) or saliency instead")


@register_method("cam", "class activation map (Zhou et al. 2016): last conv maps weighted by the class's FC "
                        "weights; needs a GAP + linear head")
class CAM(Explainer):
    scores_checked = True  # the target is checked on the method's own forward pass: see Explainer

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        missing = [what for what, ok in (("features", callable(getattr(model, "features", None))),
                                         ("head", isinstance(getattr(model, "head", None), nn.Linear))) if not ok]
        if missing:
            raise ExplainError(f"{type(model).__name__} has no {' and no '.join(missing)}: {NEEDS}")

    def layer_map(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = self.model.features(x)  # (B, C, h, w)
            head: nn.Linear = self.model.head
            if not isinstance(feats, torch.Tensor) or feats.ndim != 4 or feats.shape[1] != head.in_features:
                got = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
                raise ExplainError(f"{type(self.model).__name__}.features returned {got}, not (B, "
                                   f"{head.in_features}, h, w) for its head: {NEEDS}")
            # The names alone do not prove the architecture: the logits must be the head over the spatial mean.
            logits, gap = self.model(x), head(feats.mean(dim=(2, 3)))  # (B, K) twice
            if not torch.allclose(gap, logits, rtol=1e-3, atol=1e-4 * max(1.0, logits.abs().max().item())):
                raise ExplainError(f"{type(self.model).__name__}'s logits are not head(mean of features(x)): {NEEDS}")
            check_range(target, logits.shape[1])
            weights = head.weight[target]  # (B, C): each sample's class row of the FC layer
            return torch.einsum("bc,bchw->bhw", weights.to(feats.dtype), feats)  # (B, h, w)
