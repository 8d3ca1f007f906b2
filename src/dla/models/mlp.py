"""Lab 1, exercise 1: a multilayer perceptron with optional residual connections and normalisation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from dla.config import ModelConfig, opt
from dla.models.registry import ModelInputs, register_model
from dla.nn import Normalize


@dataclass
class MLPConfig(ModelConfig):
    name: str = opt("mlp", "model from the registry")
    width: int = opt(512, "hidden units per layer", ge=1)
    depth: int = opt(2, "number of hidden layers (the first maps the input to `width`)", ge=1, le=1000)
    residual: bool = opt(False, "add identity shortcuts around every hidden layer after the first")
    norm: Literal["none", "batch", "layer"] = opt("none", "normalisation after each hidden linear layer")
    activation: Literal["relu", "gelu"] = opt("relu", "hidden activation")
    dropout: float = opt(0.0, "dropout after each hidden activation", ge=0, lt=1)


_NORMS = {"none": lambda d: nn.Identity(), "batch": nn.BatchNorm1d, "layer": nn.LayerNorm}


class Block(nn.Module):
    """Linear -> norm -> activation -> dropout, with an optional identity shortcut around it."""

    def __init__(self, d_in: int, d_out: int, cfg: MLPConfig, residual: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.norm = _NORMS[cfg.norm](d_out)
        self.act = nn.ReLU() if cfg.activation == "relu" else nn.GELU()
        self.drop = nn.Dropout(cfg.dropout)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d_in) -> (B, d_out)
        h = self.drop(self.act(self.norm(self.linear(x))))
        return x + h if self.residual else h


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig, inputs: ModelInputs) -> None:
        super().__init__()
        d_in = math.prod(inputs.input_shape)
        self.normalize = Normalize(inputs.mean, inputs.std)
        self.flatten = nn.Flatten()
        blocks = [Block(d_in, cfg.width, cfg, residual=False)]
        blocks += [Block(cfg.width, cfg.width, cfg, residual=cfg.residual) for _ in range(cfg.depth - 1)]
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cfg.width, inputs.num_classes)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, width): what head reads
        return self.blocks(self.flatten(self.normalize(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, classes)
        return self.head(self.penultimate(x))


@register_model("mlp", MLPConfig, "multilayer perceptron; width, depth, residual, norm, dropout")
def build_mlp(cfg: MLPConfig, inputs: ModelInputs) -> nn.Module:
    return MLP(cfg, inputs)
