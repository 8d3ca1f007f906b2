"""Adversarial training (Goodfellow et al. 2015 with FGSM, Madry et al. 2018 with PGD): the model also learns
from adversarial copies of each batch, made by `dla.attacks`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dla.config import ExperimentConfig
from dla.data import Splits
from dla.errors import ConfigError
from dla.train.objectives import Objective, register_objective, require_model


@register_objective("adversarial", "(1 - mix) * CE(clean) + mix * CE(FGSM / PGD copies) (train.adversarial)")
class Adversarial(Objective):
    """Adversarial training: (1 - mix) * CE(clean logits) + mix * CE(model(x_adv)), x_adv made from each batch.

    mix = 0.5 is Goodfellow et al. (2015)'s objective (with FGSM), mix = 1 Madry et al. (2018)'s (with PGD); mix = 0
    is plain cross-entropy and makes no adversarial examples at all (the same weights as training without it).

    The examples come from `dla.attacks` as every attack does: in eval mode with frozen weights, so the attack
    targets the model that will be tested (BatchNorm running statistics, no dropout) and moves neither the
    BatchNorm statistics nor any weight gradient. The forward pass that is trained on then runs in the caller's
    mode (train), so BatchNorm normalises the adversarial batch with its own statistics, as the clean batch was
    (and updates its running statistics once more: `batchnorm_updates`). This is what madrylab's `robustness`
    library does (eval for the attack, train for the update). PGD's random start draws from the global RNG,
    which checkpoints save, so a resumed run replays the same examples.

    `fraction` < 1 attacks only the first n = round(fraction * B) examples of each batch (the batch is shuffled,
    so they are a random subset): the adversarial term is then CE on the batch with those n rows replaced by
    their adversarial copies and the other B - n rows clean, so that fraction = 1 is the loss above exactly and
    the attack costs n / B of its full price. (Kurakin et al. 2017 train on such mixed batches.)

    The model is the plain module, not the DDP / compiled wrapper the loop calls: under DDP the clean and the
    adversarial paths reach each weight through one summed gradient, so its all-reduce should still fire once
    per step (reasoned from autograd, not covered by the tests, which run on one process).
    """

    config, key, off = "train.adversarial", "train.adversarial.method", "none"
    conflicts = ("distillation", "outlier_exposure")
    example = ("train.adversarial.method=pgd", "train.adversarial.eps=0.1", "train.adversarial.steps=2")

    def __init__(self, model: nn.Module, method: str, eps: float, alpha: float, steps: int, random_start: bool,
                 mix: float, label_smoothing: float, fraction: float = 1.0, target: int = -1) -> None:
        self.model, self.method, self.eps, self.steps, self.random_start = model, method, eps, steps, random_start
        self.alpha = alpha or None  # 0 in the config = pgd's default, 2.5 * eps / steps
        self.mix, self.label_smoothing, self.fraction = mix, label_smoothing, fraction
        # target >= 0: the copies are targeted at that class (the lab's experiment); the loss keeps the true labels
        self.target = {"targeted": True, "target": target} if target >= 0 else {}
        self.batchnorm_updates = 1 if mix > 0 else 0  # the forward pass on x_adv, in train mode

    @classmethod
    def active(cls, cfg: ExperimentConfig) -> bool:
        return cfg.train.adversarial.method != "none"

    @classmethod
    def build(cls, cfg: ExperimentConfig, splits: Splits, device: torch.device,
              model: nn.Module | None = None) -> Adversarial:
        adv = cfg.train.adversarial
        model = require_model(model, "adversarial training")
        if adv.target >= 0 and adv.target >= len(splits.classes):
            raise ConfigError(f"train.adversarial.target={adv.target} is not a class of {cfg.data.name} (0 .. "
                              f"{len(splits.classes) - 1}); use -1 for untargeted adversarial training")
        return cls(model, adv.method, adv.eps, adv.alpha, adv.steps, adv.random_start, adv.mix,
                   cfg.train.label_smoothing, adv.fraction, adv.target)

    def examples(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial copies of the batch x (B, C, H, W) in [0, 1] with labels y (B,)."""
        from dla.attacks import fgsm, pgd  # here: config validation imports this module and needs no attack

        if self.method == "fgsm":
            return fgsm(self.model, x, y, self.eps, **self.target)
        return pgd(self.model, x, y, self.eps, self.alpha, self.steps, random_start=self.random_start, **self.target)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        clean = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        if self.mix == 0:
            return clean
        n = round(self.fraction * x.shape[0])  # the rows attacked; the rest of the adversarial batch stays clean
        x_adv = self.examples(x, y) if n == x.shape[0] else torch.cat([self.examples(x[:n], y[:n]), x[n:]])
        adv_logits = self.model(x_adv).float()  # (B, K), in the model's training mode
        adv = F.cross_entropy(adv_logits, y, label_smoothing=self.label_smoothing)
        return adv if self.mix == 1 else (1 - self.mix) * clean + self.mix * adv
