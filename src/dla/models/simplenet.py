"""SimpleNet: the textbook small CNN for scene recognition (MiniPlaces' baseline shape).

One stage per entry of `widths`: conv3x3-BN-ReLU (x `convs_per_stage`) then 2x2 max-pooling, so the
resolution halves at every stage; then global average pooling, dropout and a linear head. With the default
five stages a 64x64 scene ends as 2x2 maps of 256 channels, a 128x128 one as 4x4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dla.config import ModelConfig, opt
from dla.errors import ConfigError
from dla.models.registry import ModelInputs, register_model
from dla.nn import Normalize


@dataclass
class SimpleNetConfig(ModelConfig):
    name: str = opt("simplenet", "model from the registry")
    widths: list[int] = opt(help="output channels of each stage; every stage ends with a 2x2 max-pool, so an image "
                                 "needs at least 2^stages pixels per side", default_factory=lambda: [32, 64, 128, 256])
    convs_per_stage: int = opt(1, "conv3x3-BN-ReLU layers in each stage before its pooling", ge=1, le=16)
    dropout: float = opt(0.2, "dropout before the linear head", ge=0, lt=1)


class SimpleNet(nn.Module):
    def __init__(self, cfg: SimpleNetConfig, inputs: ModelInputs) -> None:
        super().__init__()
        self.normalize = Normalize(inputs.mean, inputs.std)
        layers: list[nn.Module] = []
        c = inputs.input_shape[0]
        for width in cfg.widths:
            for _ in range(cfg.convs_per_stage):
                layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
                c = width
            layers.append(nn.MaxPool2d(2))
        self.stages = nn.Sequential(*layers)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(c, inputs.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, C', H / 2^S, W / 2^S)
        return self.stages(self.normalize(x))

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, C'): head's input in eval
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, classes)
        return self.head(self.drop(self.penultimate(x)))


@register_model("simplenet", SimpleNetConfig, "small CNN: conv-BN-ReLU-maxpool stages (widths), GAP, dropout, "
                                              "linear; the scene-recognition baseline")
def build_simplenet(cfg: SimpleNetConfig, inputs: ModelInputs) -> nn.Module:
    if not cfg.widths or min(cfg.widths) < 1:
        raise ConfigError(f"model.widths={cfg.widths} must list at least one positive channel count, e.g. "
                          "[32, 64, 128, 256]")
    _, h, w = inputs.input_shape
    stages = len(cfg.widths)
    if min(h, w) < 2**stages:
        fits = max(1, min(h, w).bit_length() - 1)
        raise ConfigError(f"model.widths has {stages} stages, each halving the image: {h}x{w} images allow at most "
                          f"{fits}; drop stages from model.widths or raise data.image_size to >= {2**stages}")
    return SimpleNet(cfg, inputs)
