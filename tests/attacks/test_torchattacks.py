"""FGSM and PGD give torchattacks' numbers: untargeted and targeted, with and without PGD's random start.

torchattacks (installed with --no-deps, see the README) puts the model in eval mode like we do and sees a model
that takes [0, 1] images, since the normalisation is inside it. Differences allowed: none in float64; in float32,
the few 1e-9 that come from our rounding eps down to float32 (`dla.attacks.common.project`), far below the
2 * alpha a flipped gradient sign would cost.
"""

from __future__ import annotations

import pytest
import torch

from dla.attacks import fgsm, pgd

from .toys import CLASSES, images, labels, tiny_model

torchattacks = pytest.importorskip("torchattacks")

TOL = {torch.float32: 1e-7, torch.float64: 0.0}


def _targeted(atk: object, how: str, t: torch.Tensor) -> None:
    if how == "label":  # the labels passed to the attack are the targets
        atk.set_mode_targeted_by_label(quiet=True)
    else:
        atk.set_mode_targeted_by_function(lambda images, labels: t, quiet=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("goal", ["untargeted", "label", "function"])
@pytest.mark.parametrize("eps", [1 / 255, 8 / 255, 0.1])
def test_fgsm_equals_torchattacks(dtype: torch.dtype, goal: str, eps: float) -> None:
    model, x, y = tiny_model(dtype=dtype).train(), images(16, dtype=dtype), labels(16)
    t = (y + 1) % CLASSES
    atk = torchattacks.FGSM(model, eps=eps)
    if goal == "untargeted":
        ours, theirs = fgsm(model, x, y, eps), atk(x, y)
    else:
        _targeted(atk, goal, t)
        ours, theirs = fgsm(model, x, y, eps, targeted=True, target=t), atk(x, t if goal == "label" else y)
    assert model.training  # both restored it
    torch.testing.assert_close(ours, theirs, rtol=0, atol=TOL[dtype])
    assert not torch.equal(ours, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("goal", ["untargeted", "label", "function"])
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_equals_torchattacks(dtype: torch.dtype, goal: str, random_start: bool) -> None:
    model, x, y = tiny_model(dtype=dtype).train(), images(16, dtype=dtype), labels(16)
    t = (y + 1) % CLASSES
    eps, alpha, steps = 8 / 255, 2 / 255, 7
    atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
    kw: dict[str, object] = {}
    if goal != "untargeted":
        _targeted(atk, goal, t)
        kw = {"targeted": True, "target": t}
    torch.manual_seed(11)  # the same global RNG state for both random starts
    ours = pgd(model, x, y, eps, alpha, steps, random_start=random_start, **kw)
    torch.manual_seed(11)
    theirs = atk(x, t if goal == "label" else y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=TOL[dtype])
    # A different seed gives a different random start, and a different result: the comparison is not vacuous.
    if random_start:
        torch.manual_seed(12)
        assert not torch.equal(pgd(model, x, y, eps, alpha, steps, **kw), theirs)
