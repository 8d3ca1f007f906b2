"""Grad-CAM++, LayerCAM and Score-CAM equal pytorch-grad-cam 1.5.7's formulas on the same model, layer,
activations and gradients (see grad_cam_reference.py for how it is imported without torchvision)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dla.explain import explain
from dla.explain.base import capture, find_layer, normalise, upsample
from dla.explain.grad_cam import layer_gradients

from .grad_cam_reference import pytorch_grad_cam
from .nets import images, registry_cnn

F64 = torch.float64
TIGHT = {"rtol": 1e-9, "atol": 1e-12}
LAYERS = [None, "stages.2", "stages.3.0.bn1"]


def setting(layer: str | None, residual: bool = False) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, str]:
    model = registry_cnn(dtype=F64, residual=residual)
    x = images(4, dtype=F64)
    target = torch.tensor([0, 3, 9, 3])
    return model, x, target, find_layer(model, layer)[0]


def their_acts_grads(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, name: str
                     ) -> tuple[np.ndarray, np.ndarray]:
    """What pytorch-grad-cam hands its formulas: the layer's output and d (sum of target logits) / d output."""
    layer = dict(model.named_modules())[name]
    with torch.enable_grad():
        acts, grads = layer_gradients(model, name, layer, x, target)
    return acts.numpy(), grads.numpy()


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize(("method", "module", "cls"), [("gradcam++", "grad_cam_plusplus", "GradCAMPlusPlus"),
                                                       ("layercam", "layer_cam", "LayerCAM")])
def test_gradient_cams_equal_pytorch_grad_cam(method: str, module: str, cls: str, layer: str | None,
                                              residual: bool) -> None:
    model, x, target, name = setting(layer, residual)
    acts, grads = their_acts_grads(model, x, target, name)
    with pytorch_grad_cam(module) as ref:
        theirs = getattr(ref[module], cls)(model, [dict(model.named_modules())[name]])
        want = torch.from_numpy(theirs.get_cam_image(x, None, None, acts, grads, eigen_smooth=False))  # (B, h, w)

    maps, raw = explain(model, x, method, target, raw=True, layer=layer)

    torch.testing.assert_close(raw, want, **TIGHT)
    torch.testing.assert_close(maps, normalise(upsample(want.clamp_min(0), x.shape[-2:])), **TIGHT)


class Logit:
    """pytorch-grad-cam's ClassifierOutputTarget (model_targets.py imports torchvision): logits (K,) -> y_c."""

    def __init__(self, c: int) -> None:
        self.c = c

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[self.c]


@pytest.mark.parametrize("layer", [None, "stages.2"])
def test_score_cam_equals_pytorch_grad_cam(layer: str | None) -> None:
    model, x, target, name = setting(layer)
    with torch.no_grad(), capture(dict(model.named_modules())[name]) as out:
        model(x)
    acts = out[0].numpy()  # (B, C, h, w)
    with pytorch_grad_cam("score_cam") as ref:
        theirs = ref["score_cam"].ScoreCAM(model, [dict(model.named_modules())[name]])
        targets = [Logit(int(c)) for c in target]
        want = torch.from_numpy(theirs.get_cam_image(x, None, targets, acts, None, eigen_smooth=False))

    _, raw = explain(model, x, "scorecam", target, raw=True, layer=layer, chunk=7)

    # pytorch-grad-cam collects the masked scores in a float32 torch.Tensor before its softmax: ~1e-7 relative
    torch.testing.assert_close(raw, want, rtol=1e-5, atol=1e-7 * float(want.abs().max()))


def test_the_reference_import_leaves_no_module_behind() -> None:
    import sys

    with pytorch_grad_cam("layer_cam"):
        assert "pytorch_grad_cam.layer_cam" in sys.modules
    assert not any(k.startswith("pytorch_grad_cam") for k in sys.modules)
