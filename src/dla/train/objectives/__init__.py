"""Training objectives: what `Trainer.train_one_epoch` minimises, one module per objective, each enrolled in
`OBJECTIVES` by `@register_objective`.

An objective is an `Objective` subclass. The class reads the config: whether it asks for this objective
(`active`), which objectives it cannot be combined with (`conflicts`), the checks that need no data
(`precheck`, run before the dataset is loaded), and `build(cfg, splits, device, model)`, which makes the loss.
The instance is that loss, called as `criterion(logits, y, x, idx)` -> a scalar tensor: the student's logits
(B, K), the labels (B,), the (augmented) input batch in [0, 1] and the batch's row indices into the training
set, so that an objective can look at the input (a teacher, an adversary) or at per-example state (cached
teacher outputs).

A run trains one objective: the one its config switches on, or cross-entropy (`FALLBACK`) when none is.
`check_objectives(cfg)`, which `config.validate` calls (so before any data is read or run folder made), refuses
two at once in one `ConfigError` line. A new objective is one module in this package: importing the package
imports every module in it, so it enrols itself in `build_criterion`, that check and
tests/train/test_objective_contract.py, which runs every registered objective through the shared guarantees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, TypeVar

from dla.errors import ConfigError
from dla.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

    from dla.config import ExperimentConfig
    from dla.data import Splits

T = TypeVar("T", bound="Objective")

FALLBACK = "cross_entropy"  # what a run trains when no objective is switched on


class Objective:
    """Base class of a training objective; the decorator sets `name` and `description`, a subclass the rest."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config: ClassVar[str] = ""  # how messages name its setting, e.g. "train.adversarial"
    key: ClassVar[str] = ""  # the config key that switches it on, e.g. "train.adversarial.method"
    off: ClassVar[str] = ""  # that key's value when off, as typed in an override: "none", "''"
    conflicts: ClassVar[tuple[str, ...]] = ()  # objectives it cannot be combined with (declared on either side)
    # Overrides that switch it on at a small setting, for the contract test; "{teacher}" stands for a finished
    # run folder trained on the same data.
    example: ClassVar[tuple[str, ...]] = ()
    # The loss is plain (unsmoothed) cross-entropy of the logits: the loop logs it as it is, instead of
    # computing plain CE again to log a number comparable with validation and test.
    plain_ce: bool = False
    # How many times one loss call updates the model's BatchNorm running statistics (the caller's forward pass
    # not counted). 0 where extra passes run in eval mode or on batch statistics only; the contract test checks it.
    batchnorm_updates: int = 0

    @classmethod
    def active(cls, cfg: ExperimentConfig) -> bool:
        """Whether `cfg` asks for this objective."""
        raise NotImplementedError

    @classmethod
    def precheck(cls, cfg: ExperimentConfig) -> None:
        """Checks that need no data (e.g. a teacher's run folder), run before the dataset is loaded."""

    @classmethod
    def build(cls, cfg: ExperimentConfig, splits: Splits, device: torch.device,
              model: nn.Module | None = None) -> Objective:
        """The loss for this config; `model` is the plain module being trained (not a DDP / compiled wrapper)."""
        raise NotImplementedError

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def register_objective(name: str, description: str) -> Callable[[type[T]], type[T]]:
    """Decorate an `Objective` subclass; see the module docstring for the contract."""

    def decorate(cls: type[T]) -> type[T]:
        cls.name, cls.description = name, description
        OBJECTIVES.add(name, cls)
        return cls

    return decorate


def _import_builtin() -> None:
    # Every public module of this package is an objective: importing it runs its decorator.
    import importlib
    import pkgutil

    import dla.train.objectives as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


OBJECTIVES: Registry[type[Objective]] = Registry("training objective", ConfigError, builtin=_import_builtin)


def active_objectives(cfg: ExperimentConfig) -> list[type[Objective]]:
    """The objectives `cfg` switches on, in name order (the fallback is never among them)."""
    return [OBJECTIVES.get(n) for n in OBJECTIVES.names(lambda o: o.active(cfg))]


def check_objectives(cfg: ExperimentConfig) -> None:
    """One `ConfigError` line if `cfg` switches on two objectives: a run trains one."""
    on = active_objectives(cfg)
    for i, a in enumerate(on):
        for b in on[i + 1:]:
            if b.name in a.conflicts or a.name in b.conflicts:
                raise ConfigError(f"{a.config} and {b.config} are not supported together (each is a training "
                                  f"objective); set {a.key}={a.off} or {b.key}={b.off}")
    if len(on) > 1:  # no declared conflict, but the loop still minimises one objective
        raise ConfigError(f"{' and '.join(o.config for o in on)} are each a training objective and a run trains "
                          f"one; set {' or '.join(f'{o.key}={o.off}' for o in on)}")


def select_objective(cfg: ExperimentConfig) -> type[Objective]:
    """The objective `cfg` asks for, or cross-entropy; two at once are refused (`check_objectives`)."""
    check_objectives(cfg)
    on = active_objectives(cfg)
    return on[0] if on else OBJECTIVES.get(FALLBACK)


def build_criterion(cfg: ExperimentConfig, splits: Splits, device: torch.device,
                    model: nn.Module | None = None) -> Objective:
    """The config's objective, built; `model` (the module being trained) is needed by adversarial training and
    outlier exposure only."""
    return select_objective(cfg).build(cfg, splits, device, model)


def require_model(model: nn.Module | None, what: str) -> nn.Module:
    """The model an objective steps through again, or a ValueError (a caller's bug: the loop always passes it)."""
    if model is None:
        raise ValueError(f"{what} needs the model: build_criterion(cfg, splits, device, model)")
    return model


__all__ = ["FALLBACK", "OBJECTIVES", "Objective", "active_objectives", "build_criterion", "check_objectives",
           "register_objective", "require_model", "select_objective"]
