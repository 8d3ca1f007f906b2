"""Outlier exposure (Hendrycks et al. 2019): cross-entropy on the ID batch plus a push to uniform predictions
on auxiliary outliers, drawn from a dataset or made by FGSM from the ID batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dla.config import ExperimentConfig
from dla.data import Splits
from dla.errors import ConfigError
from dla.nn.modes import batchnorm_batch_stats, batchnorm_eval
from dla.train.objectives import Objective, register_objective, require_model


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of CE(uniform, softmax(logits)) = -(1/K) sum_k log softmax(logits)_k: (B, K) -> ()."""
    return -F.log_softmax(logits, dim=1).mean()


@register_objective("outlier_exposure", "CE(ID) + lambda * CE(uniform, auxiliary outliers) (train.outlier_exposure)")
class OutlierExposure(Objective):
    """Outlier exposure (Hendrycks et al. 2019): CE(ID batch) + lambda * CE(uniform, softmax(model(x_aux))).

    Each step draws `batch_size` auxiliary OOD images at random from `aux` (uint8 (N, C, H, W), already in the ID
    shape, on the training device) with the global torch RNG, which checkpoints save, so a resumed run draws the
    same ones. Their forward pass is a second one through the same module with every BatchNorm in eval mode:
    the outliers are normalised with the ID running statistics, as they will be at test time, and those
    statistics stay ID-only. The reference code instead concatenates ID and outlier images into one training
    batch; with outliers as unlike the ID data as noise is to MNIST that mixes their statistics into the
    running ones, and a first version that ran the auxiliary pass in train mode fell to 42% MNIST validation
    accuracy. The model is the plain module, not the DDP / compiled wrapper (one summed gradient reaches each
    weight).

    With `aux=None` and `fgsm_eps > 0` the outliers are made, not drawn: FGSM copies (`dla.attacks.fgsm`, eval
    mode, frozen weights) of the first `batch_size` images of the current ID batch, x + fgsm_eps * sign(grad CE),
    the "adversarial examples as outliers" of the lab. They cost one more forward and backward pass per step.

    `batchnorm="batch"` runs the auxiliary pass with every BatchNorm in train mode on the auxiliary batch's own
    statistics, without updating the running ones. With "eval" the network sees BatchNorm in eval mode only on
    outliers, and it can learn that difference instead of the images: on the held-out-digits split with
    Fashion-MNIST or FGSM outliers, validation accuracy (eval mode) fell to chance (17%) after the first epoch
    and recovered only as the learning rate decayed. Either way a loss call never moves the running statistics.
    """

    config, key, off = "train.outlier_exposure", "train.outlier_exposure.dataset", "''"
    conflicts = ("adversarial", "distillation")
    example = ("train.outlier_exposure.dataset=noise", "train.outlier_exposure.batch_size=8")

    def __init__(self, model: nn.Module, aux: torch.Tensor | None, weight: float, batch_size: int,
                 label_smoothing: float, channels_last: bool = False, fgsm_eps: float = 0.0,
                 batchnorm: str = "eval") -> None:
        if (aux is None) == (fgsm_eps <= 0):
            raise ValueError("OutlierExposure needs either an auxiliary image tensor or fgsm_eps > 0, not both")
        if batchnorm not in ("eval", "batch"):
            raise ValueError(f"batchnorm must be 'eval' or 'batch'; got {batchnorm!r}")
        self.model, self.aux, self.weight, self.batch_size = model, aux, weight, batch_size
        self.label_smoothing, self.channels_last, self.fgsm_eps = label_smoothing, channels_last, fgsm_eps
        self.batchnorm = batchnorm

    @classmethod
    def active(cls, cfg: ExperimentConfig) -> bool:
        return bool(cfg.train.outlier_exposure.dataset)

    @classmethod
    def build(cls, cfg: ExperimentConfig, splits: Splits, device: torch.device,
              model: nn.Module | None = None) -> OutlierExposure:
        oe, ls = cfg.train.outlier_exposure, cfg.train.label_smoothing
        model = require_model(model, "outlier exposure")
        if oe.dataset == "fgsm":
            return cls(model, None, oe.weight, oe.batch_size, ls, fgsm_eps=oe.eps, batchnorm=oe.batchnorm)
        return cls(model, load_auxiliary(cfg, splits, device), oe.weight, oe.batch_size, ls,
                   cfg.train.channels_last, batchnorm=oe.batchnorm)

    def aux_batch(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        """(batch_size, C, H, W) float auxiliary images in [0, 1]: drawn with replacement from `aux`, or (fgsm)
        FGSM copies of the first batch_size rows of the ID batch x with labels y."""
        if self.aux is None:
            from dla.attacks import fgsm  # here: config validation imports this module and needs no attack

            if x is None or y is None:
                raise ValueError("the fgsm auxiliary source perturbs the ID batch: aux_batch(x, y)")
            return fgsm(self.model, x[: self.batch_size], y[: self.batch_size], self.fgsm_eps)
        idx = torch.randint(0, len(self.aux), (self.batch_size,))  # CPU global RNG: saved in checkpoints
        xa = self.aux[idx.to(self.aux.device)].float().div_(255)
        return xa.contiguous(memory_format=torch.channels_last) if self.channels_last else xa

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        if self.weight == 0:
            return ce
        x_aux = self.aux_batch(x, y)
        with batchnorm_eval(self.model) if self.batchnorm == "eval" else batchnorm_batch_stats(self.model):
            ood_logits = self.model(x_aux).float()  # (B_aux, K)
        return ce + self.weight * uniform_cross_entropy(ood_logits)


def load_auxiliary(cfg: ExperimentConfig, splits: Splits, device: torch.device) -> torch.Tensor:
    """The outlier-exposure set's training images, converted to the ID shape: uint8 (N, C, H, W) on `device`."""
    from dla.data import resolve_data_root
    from dla.ood.data import load_registered

    oe = cfg.train.outlier_exposure
    # Seeded apart from the ID data: with dataset=noise this is not the noise any test draws.
    aux = load_registered(oe.dataset, splits.root or resolve_data_root(), splits.input_shape, train=True,
                          path=oe.path, seed=cfg.seed + 7)
    if len(aux) == 0:
        raise ConfigError(f"train.outlier_exposure.dataset={oe.dataset!r} has no training images")
    return aux.x.to(device)
