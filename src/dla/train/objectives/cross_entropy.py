"""Cross-entropy on the labels (with optional label smoothing): what a run trains when no other objective is on."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dla.config import ExperimentConfig
from dla.data import Splits
from dla.train.objectives import Objective, register_objective


@register_objective("cross_entropy", "cross-entropy on the labels, with train.label_smoothing (the default)")
class CrossEntropy(Objective):
    def __init__(self, label_smoothing: float) -> None:
        self.label_smoothing = label_smoothing
        self.plain_ce = label_smoothing == 0

    @classmethod
    def active(cls, cfg: ExperimentConfig) -> bool:
        return False  # never asked for: `select_objective` falls back to it when nothing else is on

    @classmethod
    def build(cls, cfg: ExperimentConfig, splits: Splits, device: torch.device,
              model: nn.Module | None = None) -> CrossEntropy:
        return cls(cfg.train.label_smoothing)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
