"""One decorator enrols an attack (timm-style) in `get_attack`, `evaluate_attack`, the CLI and the test matrix.

An attack is a function `fn(model, x, y, eps, **options) -> x_adv`: images (B, C, H, W) in [0, 1] in, adversarial
images of the same shape, dtype and device out, with ||x_adv - x|| <= eps per example in the norm the attack
declares (`norm="linf"`, the default, or `"l2"`; pixel units; normalisation is a module inside the model).
Every keyword option needs a default, so a registered attack can be run from its name and eps alone;
tests/attacks/test_contract.py checks the shared guarantees of every registered attack, in its own norm.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dla.attacks.common import AttackError
from dla.registry import Registry, check_options

AttackFn = Callable[..., torch.Tensor]
NORMS: tuple[str, ...] = ("linf", "l2")


@dataclass(frozen=True)
class AttackSpec:
    name: str
    fn: AttackFn
    description: str
    targeted: bool  # supports `targeted=True, target=...` and `least_likely=True`
    # For attacks whose x_adv is x + eps * d(x) clamped to [0, 1] (FGSM): `direction(model, x, y, **options)` -> d,
    # so an eps table computes the gradient once per batch instead of once per eps.
    direction: AttackFn | None = None
    norm: str = "linf"  # the ball eps measures: "linf" (max |pixel change|) or "l2" (per-image Euclidean length)

    def options(self) -> list[str]:
        """Keyword options of `fn`, after (model, x, y, eps)."""
        params = list(inspect.signature(self.fn).parameters.values())[4:]
        return [p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]

    def check_options(self, kw: dict[str, object]) -> None:
        """One clear error for a misspelt option, before any work, rather than a TypeError mid-evaluation."""
        check_options(self.fn, kw, f"attack {self.name!r}", AttackError, skip=4)

    def __call__(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None, eps: float, **kw: object
    ) -> torch.Tensor:
        self.check_options(kw)
        return self.fn(model, x, y, eps, **kw)


BUILTIN = ("dla.attacks.fgsm", "dla.attacks.pgd", "dla.attacks.apgd", "dla.attacks.apgd_t", "dla.attacks.pgd_l2",
           "dla.attacks.cw", "dla.attacks.deepfool", "dla.attacks.square",
           "dla.attacks.fab")


def register_attack(name: str, description: str, targeted: bool = True, direction: AttackFn | None = None,
                    norm: str = "linf") -> Callable[[AttackFn], AttackFn]:
    """Decorate `fn(model, x, y, eps, **options) -> x_adv`; see the module docstring for the contract."""
    if norm not in NORMS:
        raise ValueError(f"attack {name!r}: norm must be one of {', '.join(NORMS)}; got {norm!r}")

    def decorate(fn: AttackFn) -> AttackFn:
        ATTACKS.add(name, AttackSpec(name, fn, description, targeted, direction, norm))
        return fn

    return decorate


def _ensure_builtin() -> None:
    # Importing the modules runs their decorators. By module path: `dla.attacks.fgsm` the attribute is the function.
    for module in BUILTIN:
        importlib.import_module(module)


ATTACKS: Registry[AttackSpec] = Registry("attack", AttackError, builtin=_ensure_builtin)


def attack_names() -> list[str]:
    return ATTACKS.names()


def get_attack(name: str) -> AttackSpec:
    """The registered attack `name`; call it like the function: `get_attack("pgd")(model, x, y, eps, steps=20)`."""
    return ATTACKS.get(name)
