"""Training objectives: what `Trainer.train_one_epoch` minimises, one class per objective.

A criterion is called as `criterion(logits, y, x, idx)`: the student's logits (B, K), the labels (B,), the
(augmented) input batch in [0, 1] and the batch's row indices into the training set, so that an objective
can look at the input (a teacher, an adversary) or at per-example state (cached teacher outputs).
`build_criterion` picks one from the config; a new objective is one class here and one line there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dla.config import ExperimentConfig, load_config
from dla.data import Splits
from dla.errors import ConfigError
from dla.models import ModelInputs, build_model
from dla.runs import RunDir
from dla.train.checkpoint import load_checkpoint


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, temperature: float,
                      alpha: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """alpha * CE(student, y) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T)).

    Hinton et al. (2015): the T^2 keeps the soft-target gradients on the scale of the hard-label ones as T
    changes. KL is averaged over the batch (`batchmean`), which is its mathematical definition per example.
    """
    ce = F.cross_entropy(student, y, label_smoothing=label_smoothing)
    if alpha == 1:
        return ce
    kl = F.kl_div(F.log_softmax(student / temperature, dim=1), F.log_softmax(teacher / temperature, dim=1),
                  reduction="batchmean", log_target=True)
    return alpha * ce + (1 - alpha) * temperature**2 * kl


class CrossEntropy:
    def __init__(self, label_smoothing: float) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)


class Distillation:
    """Soft targets from a frozen teacher: on every batch (`online`), or computed once per example (`cached`)."""

    def __init__(self, teacher: nn.Module, temperature: float, alpha: float, label_smoothing: float,
                 cache: torch.Tensor | None = None) -> None:
        self.teacher, self.cache = teacher, cache  # cache: (N, K) teacher logits of the training set, in order
        self.temperature, self.alpha, self.label_smoothing = temperature, alpha, label_smoothing

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.cache is not None:
            teacher = self.cache[idx]
        else:
            with torch.no_grad():
                teacher = self.teacher(x).float()  # (B, K)
        return distillation_loss(logits, teacher, y, self.temperature, self.alpha, self.label_smoothing)


def check_teacher(run_path: str, cfg: ExperimentConfig) -> ExperimentConfig:
    """The teacher run's config, once the checks that need no data passed: a finished run folder, trained on
    the student's dataset. Run before the data is loaded, so a wrong teacher costs no loading (and needs none)."""
    run = RunDir(Path(run_path))
    if not run.config.is_file() or not run.best.is_file():
        raise ConfigError(f"distill.teacher={run_path!r} is not a finished run folder (it needs config.yaml and "
                          "checkpoints/best.pt); train the teacher with `dla run` first")
    tcfg = load_config(str(run.config))
    # Before the data is loaded the student may still fall back (data.fallback), and the teacher's config holds
    # the dataset it really used; after loading, cfg.data.name is the student's real one and must match exactly.
    if tcfg.data.name not in (cfg.data.name, cfg.data.fallback or cfg.data.name):
        raise ConfigError(f"the teacher in {run_path} was trained on {tcfg.data.name!r}, the student trains on "
                          f"{cfg.data.name!r}; distil on the same dataset")
    return tcfg


def load_teacher(run_path: str, cfg: ExperimentConfig, inputs: ModelInputs, device: torch.device) -> nn.Module:
    """The teacher run's best weights in its own architecture, frozen, in eval mode."""
    tcfg = check_teacher(run_path, cfg)
    run = RunDir(Path(run_path))
    teacher = build_model(tcfg.model, inputs)
    try:
        teacher.load_state_dict(load_checkpoint(run.best)["model"])
    except RuntimeError as exc:  # e.g. the teacher had a different number of classes
        raise ConfigError(f"the teacher's weights in {run.best} do not fit its model on this data: "
                          f"{str(exc).splitlines()[0]}") from None
    teacher.requires_grad_(False)
    if cfg.train.channels_last:  # the batches arrive channels-last: weights in the same layout skip a conversion
        teacher = teacher.to(memory_format=torch.channels_last)
    return teacher.to(device).eval()


@torch.no_grad()
def teacher_logits(teacher: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """(N, K) logits of the un-augmented training images, in dataset order, on `device`."""
    out = [teacher(x[i: i + batch_size].to(device).float().div_(255)).float() for i in range(0, len(x), batch_size)]
    return torch.cat(out)


class Adversarial:
    """Adversarial training: (1 - mix) * CE(clean logits) + mix * CE(model(x_adv)), x_adv made from each batch.

    mix = 0.5 is Goodfellow et al. (2015)'s objective (with FGSM), mix = 1 Madry et al. (2018)'s (with PGD); mix = 0
    is plain cross-entropy and makes no adversarial examples at all (the same weights as training without it).

    The examples come from `dla.attacks` as every attack does: in eval mode with frozen weights, so the attack
    targets the model that will be tested (BatchNorm running statistics, no dropout) and moves neither the
    BatchNorm statistics nor any weight gradient. The forward pass that is trained on then runs in the caller's
    mode (train), so BatchNorm normalises the adversarial batch with its own statistics, as the clean batch was.
    This is what madrylab's `robustness` library does (eval for the attack, train for the update). PGD's random
    start draws from the global RNG, which checkpoints save, so a resumed run replays the same examples.

    `fraction` < 1 attacks only the first n = round(fraction * B) examples of each batch (the batch is shuffled,
    so they are a random subset): the adversarial term is then CE on the batch with those n rows replaced by
    their adversarial copies and the other B - n rows clean, so that fraction = 1 is the loss above exactly and
    the attack costs n / B of its full price. (Kurakin et al. 2017 train on such mixed batches.)

    The model is the plain module, not the DDP / compiled wrapper the loop calls: under DDP the clean and the
    adversarial paths reach each weight through one summed gradient, so its all-reduce should still fire once
    per step (reasoned from autograd, not covered by the tests, which run on one process).
    """

    def __init__(self, model: nn.Module, method: str, eps: float, alpha: float, steps: int, random_start: bool,
                 mix: float, label_smoothing: float, fraction: float = 1.0, target: int = -1) -> None:
        self.model, self.method, self.eps, self.steps, self.random_start = model, method, eps, steps, random_start
        self.alpha = alpha or None  # 0 in the config = pgd's default, 2.5 * eps / steps
        self.mix, self.label_smoothing, self.fraction = mix, label_smoothing, fraction
        # target >= 0: the copies are targeted at that class (the lab's experiment); the loss keeps the true labels
        self.target = {"targeted": True, "target": target} if target >= 0 else {}

    def examples(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial copies of the batch x (B, C, H, W) in [0, 1] with labels y (B,)."""
        from dla.attacks import fgsm, pgd  # here: dla.attacks imports dla.train.metrics, which imports this module

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


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of CE(uniform, softmax(logits)) = -(1/K) sum_k log softmax(logits)_k: (B, K) -> ()."""
    return -F.log_softmax(logits, dim=1).mean()


class OutlierExposure:
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
    and recovered only as the learning rate decayed.
    """

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

    def aux_batch(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        """(batch_size, C, H, W) float auxiliary images in [0, 1]: drawn with replacement from `aux`, or (fgsm)
        FGSM copies of the first batch_size rows of the ID batch x with labels y."""
        if self.aux is None:
            from dla.attacks import fgsm  # here: dla.attacks imports dla.train.metrics, which imports this module

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


@contextlib.contextmanager
def batchnorm_eval(model: nn.Module) -> Iterator[None]:
    """Every BatchNorm layer in eval mode inside (running statistics used, not updated); modes restored after."""
    norms = [(m, m.training) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m, _ in norms:
        m.eval()
    try:
        yield
    finally:
        for m, training in norms:
            m.train(training)


@contextlib.contextmanager
def batchnorm_batch_stats(model: nn.Module) -> Iterator[None]:
    """Every BatchNorm in train mode normalises with the batch's own statistics inside, and leaves its running
    statistics and batch counter as they were (`track_running_stats` off); modes and flags restored after."""
    norms = [(m, m.training, m.track_running_stats) for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m, _, _ in norms:
        m.train()
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, training, track in norms:
            m.train(training)
            m.track_running_stats = track


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


Criterion = CrossEntropy | Distillation | Adversarial | OutlierExposure


def build_criterion(cfg: ExperimentConfig, splits: Splits, device: torch.device,
                    model: nn.Module | None = None) -> Criterion:
    """The config's objective; `model` (the module being trained) is needed by adversarial training and outlier
    exposure only."""
    ls = cfg.train.label_smoothing
    d = cfg.distill
    adv = cfg.train.adversarial
    if adv.method != "none":  # config.validate refuses it together with distillation
        if model is None:
            raise ValueError("adversarial training needs the model: build_criterion(cfg, splits, device, model)")
        if adv.target >= 0 and adv.target >= len(splits.classes):
            raise ConfigError(f"train.adversarial.target={adv.target} is not a class of {cfg.data.name} (0 .. "
                              f"{len(splits.classes) - 1}); use -1 for untargeted adversarial training")
        return Adversarial(model, adv.method, adv.eps, adv.alpha, adv.steps, adv.random_start, adv.mix, ls,
                           adv.fraction, adv.target)
    oe = cfg.train.outlier_exposure
    if oe.dataset:  # config.validate refuses it together with distillation or adversarial training
        if model is None:
            raise ValueError("outlier exposure needs the model: build_criterion(cfg, splits, device, model)")
        if oe.dataset == "fgsm":
            return OutlierExposure(model, None, oe.weight, oe.batch_size, ls, fgsm_eps=oe.eps,
                                   batchnorm=oe.batchnorm)
        return OutlierExposure(model, load_auxiliary(cfg, splits, device), oe.weight, oe.batch_size, ls,
                               cfg.train.channels_last, batchnorm=oe.batchnorm)
    if not d.teacher:
        return CrossEntropy(ls)
    inputs = ModelInputs(splits.input_shape, len(splits.classes), splits.mean, splits.std)
    teacher = load_teacher(d.teacher, cfg, inputs, device)
    cache = teacher_logits(teacher, splits.train.x, cfg.data.eval_batch_size, device) \
        if d.teacher_outputs == "cached" else None
    return Distillation(teacher, d.temperature, d.alpha, ls, cache)
