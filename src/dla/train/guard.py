"""A guard against catastrophic overfitting in fast adversarial training (Wong et al. 2020, "Fast is better than free").

FGSM training can, within one epoch, learn a model whose FGSM accuracy is high but whose PGD accuracy falls to
near 0: the single step no longer finds the adversary. Wong et al. detect it by PGD accuracy on a training batch
and stop early. Here, after each epoch, PGD (`guard_steps` steps at the training eps, random start from a fixed
seed) attacks the same first `guard_size` validation images; a collapse is a robust accuracy more than
`guard_drop` (absolute) below the best one seen so far. The loop then loads the weights of the last epoch that
did not collapse (kept here, in memory, after each good epoch) and stops. The best checkpoint (by clean
validation accuracy) only ever holds epochs before the collapse, so the test uses good weights too.

The guard's best is not saved in checkpoints: after a resume it starts again from the first resumed epoch.
"""

from __future__ import annotations

import torch
from torch import nn

from dla.config import AdversarialConfig


class AdversarialGuard:
    def __init__(self, cfg: AdversarialConfig, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> None:
        """cfg: the run's train.adversarial; x: (N, C, H, W) uint8 or [0, 1] validation images; y: (N,) labels."""
        self.eps, self.steps, self.drop = cfg.eps, cfg.guard_steps, cfg.guard_drop
        n = min(cfg.guard_size, len(y))
        self.x = x[:n].float().div(255) if not x.is_floating_point() else x[:n].float()  # (n, C, H, W) in [0, 1]
        self.y, self.seed = y[:n], seed
        self.best, self.best_epoch, self.last = -1.0, 0, -1.0
        self.good_epoch, self.good_weights = 0, None  # the last epoch that did not collapse, and its weights

    def robust_accuracy(self, model: nn.Module) -> float:
        """PGD accuracy on the guard's batch; the random start has its own seeded generator (the training RNG
        stream, which checkpoints save, is not touched)."""
        from dla.attacks import pgd  # dla.attacks imports dla.train.metrics

        x, y = self.x.to(_device(model)), self.y.to(_device(model))
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        x_adv = pgd(model, x, y, self.eps, steps=self.steps, generator=gen)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            correct = (model(x_adv).argmax(1) == y).float().mean().item()
        model.train(was_training)
        return correct

    def measure(self, model: nn.Module, epoch: int) -> float:
        """The epoch's robust accuracy; keeps a copy of the weights when it is not a collapse."""
        self.last = acc = self.robust_accuracy(model)
        if not self.collapsed:
            self.good_epoch = epoch
            self.good_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if acc > self.best:
                self.best, self.best_epoch = acc, epoch
        return acc

    @property
    def collapsed(self) -> bool:
        return self.best >= 0 and self.last < self.best - self.drop

    def message(self, epoch: int) -> str:
        return (f"catastrophic overfitting: PGD-{self.steps} accuracy at eps {self.eps:g} on {len(self.y)} val "
                f"images fell to {100 * self.last:.1f}% in epoch {epoch} (best {100 * self.best:.1f}% at epoch "
                f"{self.best_epoch}); stopped with the weights of epoch {self.good_epoch}")


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))
