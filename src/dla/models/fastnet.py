"""A small, fast CIFAR-10 net after Keller Jordan's airbench (2024): the best accuracy per CPU-minute here.

Shape (32x32 input): a frozen 2x2 patch-whitening conv (24 channels, 32 -> 31 px), then three blocks of
conv -> max-pool(2) -> BN -> GELU -> conv -> BN -> GELU at `widths` channels (31 -> 15 -> 7 -> 3 px), a global
max-pool and a bias-free linear head whose logits are scaled by `logit_scale`.

The whitening filters are the eigenvectors of the covariance of 2x2 patches of training images, divided by
the square roots of their eigenvalues (each filter and its negative, so GELU keeps both signs). They are
computed from the training images the builder is given (`ModelInputs.sample`) and stored as a buffer, so a
restored run gets them from its checkpoint. Decorrelated inputs make the first epochs count: that is most of
why this net reaches the lab's 82% in a few CPU-minutes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dla.config import ModelConfig, opt
from dla.errors import ConfigError
from dla.models.registry import ModelInputs, register_model
from dla.nn import Normalize

PATCH = 2  # whitening patch size


@dataclass
class FastNetConfig(ModelConfig):
    name: str = opt("fastnet", "model from the registry")
    widths: list[int] = opt(help="channels of the three blocks (airbench94 uses 64, 256, 256)",
                            default_factory=lambda: [32, 128, 128])
    whiten: bool = opt(True, "frozen patch-whitening first layer from the training images (else a learned conv)")
    whiten_eps: float = opt(5e-4, "added to the patch covariance's eigenvalues before the square root", gt=0)
    logit_scale: float = opt(1 / 9, "multiplies the logits (a temperature that suits the max-pool head)", gt=0)


def whitening_filters(x: torch.Tensor, eps: float) -> torch.Tensor:
    """(2 * C * P * P, C, P, P) filters that whiten the P x P patches of images x (N, C, H, W), float."""
    c = x.shape[1]
    patches = F.unfold(x, PATCH).transpose(1, 2).reshape(-1, c * PATCH * PATCH).double()  # (N * L, C*P*P)
    patches = patches - patches.mean(0)
    cov = patches.T @ patches / len(patches)
    eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
    w = (eigvecs.T / torch.sqrt(eigvals + eps)[:, None]).flip(0)  # rows = filters, largest variance first
    w = w.reshape(-1, c, PATCH, PATCH).float()
    return torch.cat([w, -w])


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.bn1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.bn2(self.conv2(x)))


class FastNet(nn.Module):
    def __init__(self, cfg: FastNetConfig, inputs: ModelInputs) -> None:
        super().__init__()
        c = inputs.input_shape[0]
        stem = 2 * c * PATCH * PATCH
        self.normalize = Normalize(inputs.mean, inputs.std)
        self.whiten = cfg.whiten
        if cfg.whiten:
            self.register_buffer("whiten_weight", torch.zeros(stem, c, PATCH, PATCH))
        else:
            self.stem = nn.Conv2d(c, stem, PATCH, bias=False)
        self.stem_bias = nn.Parameter(torch.zeros(stem))
        widths = [stem, *cfg.widths]
        self.blocks = nn.Sequential(*(_Block(a, b) for a, b in itertools.pairwise(widths)))
        self.head = nn.Linear(widths[-1], inputs.num_classes, bias=False)
        self.logit_scale = cfg.logit_scale
        if cfg.whiten and inputs.sample is not None:
            with torch.no_grad():
                self.whiten_weight.copy_(whitening_filters(self.normalize(inputs.sample.float() / 255),
                                                           cfg.whiten_eps))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, widths[-1], h, w) maps of the last block: the layer CAM and Grad-CAM explain."""
        x = self.normalize(x)
        w = self.whiten_weight if self.whiten else self.stem.weight
        x = F.gelu(F.conv2d(x, w.to(x.dtype), self.stem_bias.to(x.dtype)))
        return self.blocks(x)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, widths[-1]): the max-pooled maps times `logit_scale`, so `head(penultimate(x))` is the logits (the
        head has no bias, so scaling its input or its output is the same map)."""
        return torch.amax(self.features(x), dim=(2, 3)) * self.logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.amax(self.features(x), dim=(2, 3))  # (B, C)
        return self.head(pooled) * self.logit_scale


@register_model("fastnet", FastNetConfig, "airbench-style CIFAR net: frozen patch whitening + 3 conv blocks, max-pool "
                "head (Jordan 2024); 0.5M parameters at widths 32/128/128")
def build_fastnet(cfg: FastNetConfig, inputs: ModelInputs) -> nn.Module:
    if len(cfg.widths) != 3 or min(cfg.widths) < 1:
        raise ConfigError(f"config key 'model.widths' = {cfg.widths}: give three positive channel counts, "
                          "e.g. [32, 128, 128]")
    if min(inputs.input_shape[1:]) < 16:
        raise ConfigError(f"fastnet needs images of at least 16x16 pixels (three 2x poolings); got "
                          f"{inputs.input_shape[1]}x{inputs.input_shape[2]}")
    return FastNet(cfg, inputs)
