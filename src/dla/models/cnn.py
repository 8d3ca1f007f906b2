"""Lab 1, exercise 2: plain and residual CNNs of growing depth, and the CIFAR ResNets of He et al. (2016).

One network family covers both: a 3x3 stem conv, `stages` stages of two-conv basic blocks (the first block of
every stage after the first halves the resolution and doubles the width), global average pooling and a
linear head. `residual=true` wraps every block in a shortcut (identity, or a 1x1 projection / zero-padding
where the shape changes); `residual=false` is the same network without the additions, which is the "plain"
net of the degradation experiment. Conv depth = 1 + 2 * blocks_per_stage * stages: 9, 17, 33 and 49 with
4 stages are the lab's depths; ResNet-20/56 are 3 stages of 16/32/64 channels with 3 or 9 blocks each
(19 or 55 convs + the linear head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dla.config import ModelConfig, opt
from dla.errors import ConfigError
from dla.models.registry import ModelInputs, register_model
from dla.nn import Normalize
from dla.nn.init import kaiming_conv_bn


@dataclass
class CNNConfig(ModelConfig):
    name: str = opt("cnn", "model from the registry")
    depth: int = opt(9, "conv layers: 1 stem + 2 per block; must be 1 + 2 * stages * n (9, 17, 33, 49 with 4 "
                        "stages)", ge=3, le=1001)
    width: int = opt(16, "channels of the first stage; doubled at every downsampling", ge=1, le=4096)
    stages: int = opt(4, "stages of blocks; each after the first halves the resolution", ge=1, le=8)
    residual: bool = opt(False, "identity shortcuts around every block (false = the plain net)")
    shortcut: Literal["projection", "pad"] = opt(
        "projection", "shortcut where the shape changes: 1x1 conv + BN (He et al. option B) or stride-2 "
                      "subsampling with zero-padded channels (option A, parameter-free)")
    norm: Literal["batch", "none"] = opt("batch", "BatchNorm after every conv")
    zero_init_residual: bool = opt(False, "start every residual branch's last BN at zero (blocks = identity)")
    conv_impl: Literal["conv", "unfold"] = opt("conv", "nn.Conv2d, or dla.nn.UnfoldConv2d (unfold/fold with "
                                                       "its own backward) for every conv")


@dataclass
class ResNetCifarConfig(CNNConfig):
    name: str = opt("resnet_cifar", "model from the registry")
    depth: int = opt(20, "layers counted as in He et al.: 6n + 2 (20, 32, 44, 56, 110)", ge=8, le=1202)
    width: int = opt(16, "channels of the first stage (16, 32, 64 over the three stages)", ge=1, le=4096)
    stages: int = opt(3, "stages of blocks (3 in the paper)", ge=1, le=8)
    residual: bool = opt(True, "identity shortcuts (false = the paper's plain-20/56 baselines)")
    shortcut: Literal["projection", "pad"] = opt("pad", "option A of the paper (zero-padding) or B (projection)")


@dataclass
class ResNet20Config(ResNetCifarConfig):
    name: str = opt("resnet20", "model from the registry")
    depth: int = opt(20, "6n + 2 layers; 20 for ResNet-20", ge=8, le=1202)


@dataclass
class ResNet56Config(ResNetCifarConfig):
    name: str = opt("resnet56", "model from the registry")
    depth: int = opt(56, "6n + 2 layers; 56 for ResNet-56", ge=8, le=1202)


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.Identity()


class PadShortcut(nn.Module):
    """Option A: subsample by the stride and append zero channels; no parameters."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = c_out - c_in, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C + extra, H / s, W / s)
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, plus the shortcut when residual, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, cfg: CNNConfig) -> None:
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = _norm(cfg.norm, c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = _norm(cfg.norm, c_out)
        self.residual = cfg.residual
        self.shortcut: nn.Module | None = None
        if cfg.residual:
            self.shortcut = nn.Identity()
            if stride != 1 or c_in != c_out:
                self.shortcut = PadShortcut(c_in, c_out, stride) if cfg.shortcut == "pad" else nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _norm(cfg.norm, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H / s, W / s)
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        if self.shortcut is not None:
            h = h + self.shortcut(x)
        return F.relu(h)


class CNN(nn.Module):
    """normalize -> stem -> stages -> global average pool -> linear.

    `features(x)` gives the last conv feature maps (B, C, h, w) and `head` the linear layer over their
    spatial mean (`penultimate(x)`, (B, C)): what CAM, the fully-convolutional view and the feature-space OOD
    detectors need.
    """

    def __init__(self, cfg: CNNConfig, inputs: ModelInputs, blocks_per_stage: int) -> None:
        super().__init__()
        c_in = inputs.input_shape[0]
        self.normalize = Normalize(inputs.mean, inputs.std)
        self.stem = nn.Sequential(conv3x3(c_in, cfg.width), _norm(cfg.norm, cfg.width), nn.ReLU())
        stages, c = [], cfg.width
        for s in range(cfg.stages):
            c_out = cfg.width * 2**s
            blocks = [BasicBlock(c if b == 0 else c_out, c_out, 2 if (b == 0 and s > 0) else 1, cfg)
                      for b in range(blocks_per_stage)]
            stages.append(nn.Sequential(*blocks))
            c = c_out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(c, inputs.num_classes)
        self._init(cfg)

    def _init(self, cfg: CNNConfig) -> None:
        kaiming_conv_bn(self)
        if cfg.zero_init_residual and cfg.residual and cfg.norm == "batch":
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, C', h, w)
        return self.stages(self.stem(self.normalize(x)))

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, C'): what `head` reads
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, classes)
        return self.head(self.penultimate(x))


class FullyConvolutional(nn.Module):
    """A trained CNN whose linear head becomes a 1x1 conv: any image size in, a class-score map out.

    Because the head is linear, averaging this map over space gives back the classifier's logits exactly;
    on an image larger than the training size each location scores its own receptive field.
    """

    def __init__(self, cnn: CNN) -> None:
        super().__init__()
        self.cnn = cnn
        k, c = cnn.head.weight.shape
        self.classifier = nn.Conv2d(c, k, 1)
        with torch.no_grad():
            self.classifier.weight.copy_(cnn.head.weight.view(k, c, 1, 1))
            self.classifier.bias.copy_(cnn.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, classes, h, w)
        return self.classifier(self.cnn.features(x))


def valid_depths(stages: int, upto: int = 6) -> list[int]:
    return [1 + 2 * stages * n for n in range(1, upto + 1)]


def _check_size(cfg: CNNConfig, inputs: ModelInputs) -> None:
    _, h, w = inputs.input_shape
    halvings = cfg.stages - 1
    if min(h, w) < 2**cfg.stages:  # the last stage would be down to a single pixel or less
        fits = max(1, min(h, w).bit_length() - 1)
        raise ConfigError(f"model.stages={cfg.stages} halves a {h}x{w} image {halvings} times, too small; use "
                          f"model.stages<={fits} or images of at least {2**cfg.stages}x{2**cfg.stages}")


def _swap(model: nn.Module, cfg: CNNConfig) -> nn.Module:
    if cfg.conv_impl == "unfold":
        from dla.nn.unfold_conv import swap_convs

        swap_convs(model)
    return model


@register_model("cnn", CNNConfig, "plain or residual CNN: depth (9/17/33/49), width, stages, BatchNorm, GAP head")
def build_cnn(cfg: CNNConfig, inputs: ModelInputs) -> nn.Module:
    per_stage, rest = divmod(cfg.depth - 1, 2 * cfg.stages)
    if rest or per_stage < 1:
        raise ConfigError(f"model.depth={cfg.depth} cannot be built from {cfg.stages} stages of two-conv blocks "
                          f"plus a stem; valid depths are 1 + {2 * cfg.stages}n: "
                          f"{', '.join(map(str, valid_depths(cfg.stages)))}, ...")
    _check_size(cfg, inputs)
    return _swap(CNN(cfg, inputs, per_stage), cfg)


def build_resnet_cifar(cfg: ResNetCifarConfig, inputs: ModelInputs) -> nn.Module:
    n, rest = divmod(cfg.depth - 2, 2 * cfg.stages)
    if rest or n < 1:
        ok = ", ".join(str(2 * cfg.stages * k + 2) for k in (1, 3, 5, 7, 9, 18))
        raise ConfigError(f"model.depth={cfg.depth} is not a CIFAR ResNet depth ({2 * cfg.stages}n + 2 layers); "
                          f"use one of {ok}")
    _check_size(cfg, inputs)
    return _swap(CNN(cfg, inputs, n), cfg)


register_model("resnet_cifar", ResNetCifarConfig, "He et al.'s CIFAR ResNet, depth 6n+2 (option A shortcuts)")(
    build_resnet_cifar)
register_model("resnet20", ResNet20Config, "ResNet-20 for 32x32 images (0.27M parameters with 10 classes)")(
    build_resnet_cifar)
register_model("resnet56", ResNet56Config, "ResNet-56 for 32x32 images (0.85M parameters with 10 classes)")(
    build_resnet_cifar)
