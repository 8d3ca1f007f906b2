"""Knowledge distillation (Hinton et al. 2015): soft targets from a frozen teacher run, online or cached."""

from __future__ import annotations

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
from dla.train.objectives import Objective, register_objective


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


@register_objective("distillation", "soft targets of a frozen teacher run (distill.teacher), online or cached")
class Distillation(Objective):
    """Soft targets from a frozen teacher: on every batch (`online`), or computed once per example (`cached`).

    The teacher is in eval mode with frozen weights: its BatchNorm statistics never move and it gets no
    gradient; the student's BatchNorm sees only the caller's forward pass.
    """

    config = key = "distill.teacher"
    off = "''"
    conflicts = ("adversarial", "outlier_exposure")
    example = ("distill.teacher={teacher}", "distill.alpha=0.5", "distill.temperature=2")

    def __init__(self, teacher: nn.Module, temperature: float, alpha: float, label_smoothing: float,
                 cache: torch.Tensor | None = None) -> None:
        self.teacher, self.cache = teacher, cache  # cache: (N, K) teacher logits of the training set, in order
        self.temperature, self.alpha, self.label_smoothing = temperature, alpha, label_smoothing

    @classmethod
    def active(cls, cfg: ExperimentConfig) -> bool:
        return bool(cfg.distill.teacher)

    @classmethod
    def precheck(cls, cfg: ExperimentConfig) -> None:
        check_teacher(cfg.distill.teacher, cfg)  # a wrong teacher folder is refused before the dataset is loaded

    @classmethod
    def build(cls, cfg: ExperimentConfig, splits: Splits, device: torch.device,
              model: nn.Module | None = None) -> Distillation:
        d = cfg.distill
        inputs = ModelInputs(splits.input_shape, len(splits.classes), splits.mean, splits.std)
        teacher = load_teacher(d.teacher, cfg, inputs, device)
        cache = teacher_logits(teacher, splits.train.x, cfg.data.eval_batch_size, device) \
            if d.teacher_outputs == "cached" else None
        return cls(teacher, d.temperature, d.alpha, cfg.train.label_smoothing, cache)

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
