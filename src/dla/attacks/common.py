"""What every attack shares: the model's state during an attack, input checks, the objective, the final projection.

Objectives. With logits z = f(x) (B, K), true labels y and target labels t, an attack ascends, per example:

- untargeted:          L = CE(z, y) = logsumexp(z) - z_y                  (push away from the true class);
- targeted "standard": L = -CE(z, t) = z_t - logsumexp(z)                 (pull toward the target);
- targeted "ovo":      L = CE(z, y) - CE(z, t) = z_t - z_y                (one-vs-one: toward t *and* away from y);
- targeted "ovr":      L = mean_{k != t} CE(z, k) - CE(z, t)
                         = z_t - mean_{k != t} z_k                        (one-vs-rest: away from every other class).

The logsumexp terms cancel in ovo and ovr, so both are logit margins: they are computed in that form, which is
exact where the textbook difference of cross-entropies would cancel two large numbers. The ovr average (not the
sum) over the K - 1 other classes keeps the "toward t" and "away from the rest" halves on the same scale.

Gradient steps use the sum of the per-example objectives: in eval mode the examples do not interact, so each
example's input gradient is its own, whatever the batch (torchattacks uses the batch mean: the same signs).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dla.errors import DlaError
from dla.nn.modes import classifier_logits, eval_frozen

Variant = Literal["standard", "ovo", "ovr"]
VARIANTS: tuple[str, ...] = ("standard", "ovo", "ovr")


class AttackError(DlaError):
    """A bad attack request: unknown attack or option, eps out of range, inconsistent target arguments."""


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters inside; every module's mode and `requires_grad` flag restored after.

    Eval mode makes the attack deterministic (no dropout) and per-example (BatchNorm uses its running statistics,
    not the batch's, and does not update them). Frozen parameters mean backpropagating to the input leaves no
    `.grad` on the weights and builds no graph through them. Restored even when the attack raises. This is the
    same state the OOD scores need (`dla.ood.scores`), so it is that helper.
    """
    with eval_frozen(model):
        yield


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits (B, K), in at least float32 so that the loss is not rounded in bf16/fp16."""
    return classifier_logits(model, x, AttackError, "attacks")


def check_images(x: torch.Tensor) -> torch.Tensor:
    """A detached view of `x` after checking it is a batch of floating images in [0, 1]."""
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise AttackError(f"x must be a batch tensor (B, ...), e.g. images (B, C, H, W) in [0, 1]; got {x!r:.80}")
    if not x.is_floating_point():
        raise AttackError(f"x must be a floating-point tensor in [0, 1]; got {x.dtype}: convert with x.float() / 255")
    x = x.detach()  # never backpropagate into, or accumulate a gradient on, the caller's tensor
    if x.numel() and (x.amin() < 0 or x.amax() > 1):
        lo, hi = float(x.amin()), float(x.amax())
        raise AttackError(
            f"x must hold images in [0, 1] (models take [0, 1] images and normalise inside, e.g. with dla.nn.Normalize "
            f"as their first layer); got min {lo:.3g}, max {hi:.3g}: pass unnormalised images"
        )
    return x


def check_eps(eps: float, name: str = "eps") -> float:
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 <= eps < float("inf"):
        raise AttackError(f"{name} must be a finite number >= 0 in pixel units (e.g. 8/255); got {eps!r}")
    return float(eps)


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """A step size: finite and > 0 (a zero step never moves the image; leave it unset for the default)."""
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < float("inf"):
        raise AttackError(f"{name} must be a finite step size > 0 in pixel units (e.g. 2/255), or left unset for "
                          f"2.5 * eps / steps; got {alpha!r}")
    return float(alpha)


def _labels(labels: torch.Tensor | int, batch: int, device: torch.device, name: str) -> torch.Tensor:
    """An int (the same label for every example) or a (B,) integer tensor -> (B,) int64 on `device`."""
    if isinstance(labels, bool):
        raise AttackError(f"{name} must be an int class index or a (B,) tensor of them; got {labels!r}")
    if isinstance(labels, int):
        return torch.full((batch,), labels, dtype=torch.long, device=device)
    if not isinstance(labels, torch.Tensor) or labels.shape != (batch,) or labels.is_floating_point():
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else repr(labels)
        raise AttackError(f"{name} must be an int or an integer tensor of shape ({batch},) for this batch; got {got}")
    return labels.detach().to(device=device, dtype=torch.long)


@torch.no_grad()  # not inference_mode: the targets go on into the attack's loss, which saves them for backward
def least_likely_target(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B,) the class with the smallest clean logit per example (Kurakin et al. 2017's y_LL = argmin_k p(k | x)).

    Call it with the model already in `attack_mode`. The true label is not excluded (torchattacks' least-likely
    mode does exclude it): if the true class has the smallest logit the example is misclassified anyway.
    """
    return logits_of(model, x).argmin(dim=1)


@dataclass(frozen=True)
class Goal:
    """What an attack ascends and when it has succeeded, per example (see the module docstring)."""

    y: torch.Tensor | None  # (B,) true labels; None only for targeted "standard"/"ovr", which do not use them
    target: torch.Tensor | None  # (B,) target labels; None = untargeted
    variant: str = "standard"

    @property
    def targeted(self) -> bool:
        return self.target is not None

    def check_classes(self, k: int) -> None:
        # Checked before the loss: an out-of-range label is a device-side assert on CUDA, not a readable error.
        for name, labels in (("y", self.y), ("target", self.target)):
            if labels is not None and labels.numel() and (labels.min() < 0 or labels.max() >= k):
                bad = int(labels[(labels < 0) | (labels >= k)][0])
                raise AttackError(f"{name} holds class {bad}, but the model has {k} classes (0 ... {k - 1})")

    def objective(self, z: torch.Tensor) -> torch.Tensor:
        """(B,) the quantity to increase, from logits z (B, K)."""
        self.check_classes(z.shape[1])
        if not self.targeted:
            return F.cross_entropy(z, self.y, reduction="none")
        z_t = z.gather(1, self.target[:, None])[:, 0]  # (B,)
        if self.variant == "standard":
            return -F.cross_entropy(z, self.target, reduction="none")
        if self.variant == "ovo":
            return z_t - z.gather(1, self.y[:, None])[:, 0]
        return z_t - (z.sum(dim=1) - z_t) / (z.shape[1] - 1)  # ovr

    def success(self, z: torch.Tensor) -> torch.Tensor:
        """(B,) bool: misclassified (untargeted) or classified as the target (targeted)."""
        pred = z.argmax(dim=1)
        return pred == self.target if self.targeted else pred != self.y


def make_goal(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    targeted: bool,
    target: torch.Tensor | int | None,
    variant: str,
    least_likely: bool,
) -> Goal:
    """Check the target arguments and resolve them into a `Goal`; the model must already be in `attack_mode`.

    `least_likely=True` is the untargeted-looking mode of the assignment: no target is given, each example is
    pushed toward its least-likely class under the clean model, i.e. a targeted attack on that class.
    """
    batch, device = x.shape[0], x.device
    if variant not in VARIANTS:
        raise AttackError(f"variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
    if least_likely and target is not None:
        raise AttackError("least_likely=True chooses the target itself; pass either it or target=, not both")
    if target is not None and not targeted:
        raise AttackError("target= is given but targeted=False: pass targeted=True to attack toward it")
    if targeted and target is None and not least_likely:
        raise AttackError("targeted=True needs target= (an int class or a (B,) tensor), or least_likely=True")
    if not (targeted or least_likely) and variant != "standard":
        raise AttackError(f"variant={variant!r} is a targeted loss: pass targeted=True with target=, or least_likely")
    needs_y = not (targeted or least_likely) or variant == "ovo"
    if y is None and needs_y:
        raise AttackError("y (the true labels, a (B,) tensor) is required for untargeted attacks and variant='ovo'")
    y_t = _labels(y, batch, device, "y") if y is not None else None
    if least_likely:
        t = least_likely_target(model, x)
    elif target is not None:
        t = _labels(target, batch, device, "target")
    else:
        t = None
    return Goal(y_t, t, variant)


def input_gradient(model: nn.Module, x: torch.Tensor, goal: Goal) -> torch.Tensor:
    """d sum_i L_i / d x (same shape as x) at `x`, with autograd on even inside a caller's `torch.no_grad()`."""
    with torch.enable_grad():
        x_req = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(goal.objective(logits_of(model, x_req)).sum(), x_req)
    return grad


def eps_in_dtype(eps: float, dtype: torch.dtype) -> float:
    """The largest number of `dtype` that is <= eps: a radius that float rounding cannot push past eps."""
    e = torch.tensor(eps, dtype=torch.float64).to(dtype)
    if float(e) > eps:
        e = torch.nextafter(e, torch.zeros_like(e))
    return float(e)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """x_adv clamped into the eps-ball around x and into [0, 1]; detached, exact despite float rounding.

    Clamping to [x - eps, x + eps] is not enough on its own: x + eps is rounded to x's dtype and can land one unit
    in the last place outside the ball. So eps is first rounded down to the dtype, and any pixel still measured
    (exactly, in float64) outside the ball is stepped back toward x by one representable number until it is in.
    Afterwards |x_adv - x| <= eps holds however it is checked: in x's dtype, in float64, or via `.item()`.
    """
    e = eps_in_dtype(eps, x.dtype)
    x_adv = torch.minimum(torch.maximum(x_adv, x - e), x + e).clamp(0.0, 1.0)
    x64 = x.to(torch.float64)
    for _ in range(4):  # one step is almost always enough
        over = (x_adv.to(torch.float64) - x64).abs() > e
        if not over.any():
            return x_adv.detach()
        x_adv = torch.where(over, torch.nextafter(x_adv, x), x_adv)
    return torch.where((x_adv.to(torch.float64) - x64).abs() > e, x, x_adv).detach()


def step_along(x: torch.Tensor, direction: torch.Tensor, eps: float) -> torch.Tensor:
    """x + eps * direction, clamped to [0, 1]: the same numbers as torchattacks.FGSM; `project` only adds the
    float-rounding guard of the eps ball."""
    if eps == 0 or x.shape[0] == 0:
        return x.clone()
    return project(x + eps * direction, x, eps)


def check_count(value: int, name: str, low: int) -> int:
    """An integer option (steps, restarts, ...) >= low, or one AttackError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise AttackError(f"{name} must be an integer >= {low}; got {value!r}")
    return value


def check_positive(value: float, name: str) -> float:
    """A finite number > 0 (a step size, a constant, a learning rate), or one AttackError naming it."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        raise AttackError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)
