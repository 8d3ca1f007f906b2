"""The methods compute what their papers say: Grad-CAM and saliency equal captum's, CAM equals Grad-CAM on a
GAP + linear network (up to the 1 / (h * w) of the pooling), and the errors name the options."""

from __future__ import annotations

import copy

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam, NoiseTunnel, Saliency
from torch import nn

from dla.explain import ExplainError, cam, default_layer, grad_cam, saliency
from dla.explain.base import normalise
from dla.nn import UnfoldConv2d
from dla.nn.unfold_conv import swap_convs

from .nets import GapNet, flat_net, images, registry_cnn

F64 = torch.float64
TIGHT = {"rtol": 1e-9, "atol": 1e-12}


def captum_grad_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: nn.Module
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """captum's raw layer map (B, h, w) and its display map: ReLU, bilinear upsampling, min-max per sample."""
    gc = LayerGradCam(model, layer)
    raw = gc.attribute(x, target=target).squeeze(1)
    up = LayerAttribution.interpolate(gc.attribute(x, target=target, relu_attributions=True), x.shape[-2:],
                                      "bilinear")  # (B, 1, H, W)
    return raw, normalise(up.squeeze(1))


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("layer", [None, "stages.1", "stages.3.0.bn1", "stem"])
def test_grad_cam_equals_captum_layer_grad_cam(residual: bool, layer: str | None) -> None:
    model = registry_cnn(dtype=F64, residual=residual)
    x = images(5, dtype=F64)
    target = model(x).argmax(dim=1)
    module = dict(model.named_modules())[layer or "stages.3.0"]
    want_raw, want = captum_grad_cam(model, x, target, module)

    maps, raw = grad_cam(model, x, layer=layer, raw=True)  # target None: the predicted class, as given to captum

    torch.testing.assert_close(raw, want_raw, **TIGHT)
    torch.testing.assert_close(maps, want, **TIGHT)
    other = (target + 3) % 10
    torch.testing.assert_close(grad_cam(model, x, other, layer), captum_grad_cam(model, x, other, module)[1], **TIGHT)


CAPTUM_GRAD_WARNING = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")


@CAPTUM_GRAD_WARNING
def test_saliency_equals_captum_saliency() -> None:
    model = registry_cnn(dtype=F64)
    x = images(5, dtype=F64)
    target = torch.tensor([0, 3, 9, 3, 1])
    want_raw = Saliency(model).attribute(x, target=target, abs=True).amax(dim=1)  # (B, H, W): max over channels

    maps, raw = saliency(model, x, target, raw=True)

    torch.testing.assert_close(raw, want_raw, **TIGHT)
    torch.testing.assert_close(maps, normalise(want_raw), **TIGHT)


@CAPTUM_GRAD_WARNING
def test_smoothgrad_averages_captum_saliency_over_the_same_noisy_copies() -> None:
    model = registry_cnn(dtype=F64)
    x = images(3, dtype=F64)
    target = model(x).argmax(dim=1)
    gen = torch.Generator().manual_seed(7)  # the noise SmoothGrad draws for seed=7: one (C, H, W) per copy
    noisy = [x + 0.2 * torch.randn(x.shape[1:], generator=gen, dtype=F64) for _ in range(4)]
    want = torch.stack([Saliency(model).attribute(xn, target=target, abs=True) for xn in noisy]).mean(0).amax(1)

    _, raw = saliency(model, x, samples=4, noise=0.2, seed=7, raw=True)

    torch.testing.assert_close(raw, want, **TIGHT)
    # captum's NoiseTunnel does the same averaging with its own noise: with zero noise the two must agree.
    tunnel = NoiseTunnel(Saliency(model)).attribute(x, target=target, abs=True, nt_type="smoothgrad",
                                                    nt_samples=3, stdevs=0.0).amax(dim=1)
    torch.testing.assert_close(saliency(model, x, samples=3, noise=0.0, raw=True)[1], tunnel, **TIGHT)
    torch.testing.assert_close(saliency(model, x, samples=2, noise=0.0), saliency(model, x), **TIGHT)
    assert not torch.allclose(raw, saliency(model, x, raw=True)[1])  # the noise does change the map
    torch.testing.assert_close(saliency(model, x, samples=4, noise=0.2, seed=7), normalise(want), **TIGHT)


def test_cam_equals_grad_cam_at_the_last_conv_of_a_gap_linear_network() -> None:
    torch.manual_seed(0)
    model = GapNet().to(F64).eval()
    x = images(4, dtype=F64, shape=(3, 12, 12))
    assert default_layer(model) == "body"  # the block holding the last conv: what the head pools

    cam_maps, cam_raw = cam(model, x, raw=True)
    gc_maps, gc_raw = grad_cam(model, x, raw=True)

    # d y_c / d A_k(i, j) = w_ck / (h * w): Grad-CAM's weights are CAM's divided by the number of locations.
    h, w = cam_raw.shape[1:]
    torch.testing.assert_close(gc_raw, cam_raw / (h * w), **TIGHT)
    torch.testing.assert_close(gc_maps, cam_maps, **TIGHT)  # equal once normalised
    for t in range(7):
        torch.testing.assert_close(grad_cam(model, x, t), cam(model, x, t), **TIGHT)


def test_cam_decomposes_the_class_score_of_the_registry_cnn() -> None:
    model = registry_cnn(dtype=F64)
    x = images(4, dtype=F64)
    logits = model(x)
    target = torch.tensor([1, 5, 5, 0])
    _, raw = cam(model, x, target, raw=True)  # (B, 4, 4)
    assert raw.shape == (4, 4, 4)
    # Its spatial mean plus the class bias is the logit: each location's share of the score.
    torch.testing.assert_close(raw.mean(dim=(1, 2)) + model.head.bias[target], logits.gather(1, target[:, None])[:, 0],
                               **TIGHT)
    # and Grad-CAM at the pooled layer (the output of `stages`, which `features` returns) is the same map.
    _, gc_raw = grad_cam(model, x, target, layer="stages", raw=True)
    torch.testing.assert_close(gc_raw, raw / 16, **TIGHT)


def test_cam_needs_a_gap_linear_head_and_says_what_to_use_instead() -> None:
    with pytest.raises(ExplainError) as err:
        cam(flat_net(), images(2))
    msg = str(err.value)
    assert "Sequential has no features and no head" in msg
    assert "global average pooling + linear" in msg and "gradcam" in msg and "saliency" in msg
    with pytest.raises(ExplainError, match=r"logits are not head\(mean of features\(x\)\).*gradcam"):
        cam(GapNet(pool="max").eval(), images(2, shape=(3, 12, 12)))  # features and head, but max pooling


def test_layer_names_the_options_when_wrong() -> None:
    model = registry_cnn()
    with pytest.raises(ExplainError) as err:
        grad_cam(model, images(2), layer="stages.9")
    msg = str(err.value)
    assert msg.startswith("unknown layer 'stages.9'; conv layers: stem.0, stages.0.0.conv1, stages.0.0.conv2")
    assert "stages.3.0.conv2; all layers: normalize, stem, stem.0, stem.1" in msg and "head" in msg
    with pytest.raises(ExplainError, match=r"layer 'head' outputs \(2, 10\), not a feature map \(B, C, h, w\)"):
        grad_cam(model, images(2), layer="head")
    with pytest.raises(ExplainError, match="not part of this model"):
        grad_cam(model, images(2), layer=nn.Conv2d(3, 3, 1))
    with pytest.raises(ExplainError, match=r"has no conv layer .* layers: 0, 1, 2"):
        grad_cam(flat_net(), images(2))
    with pytest.raises(ExplainError, match="'unused' does not depend on the input"):
        grad_cam(SideBranch(detach=True), images(2), layer="unused")
    with pytest.raises(ExplainError, match="the class scores do not depend on layer 'unused'"):
        grad_cam(SideBranch(detach=False), images(2), layer="unused")
    with pytest.raises(ExplainError, match=r"'body\.1' ran 2 times in one forward pass"):
        grad_cam(Twice(), images(2), layer="body.1")


class SideBranch(nn.Module):
    """The registry CNN plus a conv that runs on the input but never reaches the scores."""

    def __init__(self, detach: bool) -> None:
        super().__init__()
        self.net, self.unused, self.detach = registry_cnn(), nn.Conv2d(3, 2, 3), detach

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.unused(x.detach() if self.detach else x)
        return self.net(x)


class Twice(nn.Module):
    """One conv applied twice: which of its two outputs Grad-CAM should read is ambiguous."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Identity(), nn.Conv2d(3, 3, 3, padding=1))
        self.head = nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body[1](self.body(x)).mean(dim=(2, 3)))


def test_the_default_layer_is_the_block_of_the_last_main_path_conv() -> None:
    # Its output is after BatchNorm, ReLU and the residual addition: the rectified features the head pools.
    assert default_layer(registry_cnn()) == "stages.3.0"
    residual = registry_cnn(residual=True)  # its last block registers a 1x1 projection shortcut after conv2
    assert "stages.3.0.shortcut.0" in dict(residual.named_modules())
    assert default_layer(residual) == "stages.3.0"
    top = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())  # a conv directly in the model
    assert default_layer(top) == "0"


def test_grad_cam_reads_unfold_convs_like_nn_conv2d() -> None:
    model = registry_cnn(dtype=F64)
    unfold = swap_convs(copy.deepcopy(model))
    assert any(isinstance(m, UnfoldConv2d) for m in dict(unfold.named_modules())[default_layer(unfold)].modules())
    x = images(3, dtype=F64)
    torch.testing.assert_close(grad_cam(unfold, x, raw=True)[1], grad_cam(model, x, raw=True)[1], rtol=1e-7,
                               atol=1e-10)
