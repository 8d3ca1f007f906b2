"""FGSM and PGD give torchattacks' numbers: untargeted and targeted, with and without PGD's random start.

torchattacks (installed with --no-deps, see the README) puts the model in eval mode like we do and sees a model
that takes [0, 1] images, since the normalisation is inside it. Differences allowed: none in float64; in float32,
the few 1e-9 that come from our rounding eps down to float32 (`dla.attacks.common.project`), far below the
2 * alpha a flipped gradient sign would cost.
"""

from __future__ import annotations

import pytest
import torch

from dla.attacks import fgsm, get_attack, pgd

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


# ---- the stronger attacks: APGD (CE, DLR, T), PGD-L2, DeepFool, CW-L2 ------------------------------------------
#
# The labels are the model's own predictions with every third one replaced by a random label, so that most
# examples are attacked and some are misclassified from the start (both sides leave those alone).


def _model_and_data(dtype: torch.dtype, n: int = 24) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model, x = tiny_model(dtype=dtype), images(n, dtype=dtype)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    y[::3] = labels(n)[::3]
    return model.train(), x, y


def _fooled(model: torch.nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x_adv).argmax(1) != y


APGD = [("apgd-ce", {"loss": "ce"}), ("apgd-dlr", {"loss": "dlr"}), ("apgd-t", {})]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("name", "theirs_kw"), APGD, ids=[n for n, _ in APGD])
@pytest.mark.parametrize("eps", [2 / 255, 8 / 255])
def test_apgd_equals_torchattacks(dtype: torch.dtype, name: str, theirs_kw: dict, eps: float) -> None:
    # Seeded: both draw the random starts from a generator seeded with `seed`, ours a private one. Same examples
    # fooled, and on those the same adversarial images: to an ulp in float32 (eps rounded down, as for PGD). In
    # float64, torchattacks keeps its step size and its loss history in float32 (ours are in x's dtype): the
    # rounded history can flip a step-size halving, after which that image's path differs. With both made float32
    # ours gives torchattacks' float64 images exactly (checked by hand); as written, the robust accuracy agrees
    # within one example and most images agree to 1e-8 (the float32 step size alone moves them by ~1e-9).
    model, x, y = _model_and_data(dtype)
    restarts = 1 if name == "apgd-t" else 2
    if name == "apgd-t":
        atk = torchattacks.APGDT(model, eps=eps, steps=12, n_restarts=restarts, seed=3, n_classes=CLASSES)
    else:
        atk = torchattacks.APGD(model, eps=eps, steps=12, n_restarts=restarts, seed=3, **theirs_kw)
    ours = get_attack(name)(model, x, y, eps, steps=12, restarts=restarts, seed=3)
    theirs = atk(x, y)
    f_ours, f_theirs = _fooled(model, ours, y), _fooled(model, theirs, y)
    assert abs(int(f_ours.sum()) - int(f_theirs.sum())) <= 1
    attacked = model.eval()(x).argmax(1) == y
    assert (f_theirs & attacked).any()  # the comparison is not vacuous
    if dtype == torch.float32:
        assert torch.equal(f_ours, f_theirs)
        torch.testing.assert_close(ours[f_theirs], theirs[f_theirs], rtol=0, atol=1e-7)
    else:
        same = (ours - theirs).flatten(1).abs().amax(1) <= 1e-8  # (B,)
        assert same[f_theirs].float().mean() >= 0.7
    assert not torch.equal(get_attack(name)(model, x, y, eps, steps=12, restarts=restarts, seed=4), ours)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("goal", ["untargeted", "label"])
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_l2_equals_torchattacks(dtype: torch.dtype, goal: str, random_start: bool) -> None:
    # torchattacks normalises the gradient of the batch-mean loss plus 1e-10, ours of the summed loss plus 1e-10:
    # the 1e-10 weighs differently, a relative 1e-9 of the step.
    model, x, y = _model_and_data(dtype)
    t = (y + 1) % CLASSES
    eps, alpha, steps = 0.5, 0.1, 7
    atk = torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
    kw: dict[str, object] = {}
    if goal == "label":
        _targeted(atk, goal, t)
        kw = {"targeted": True, "target": t}
    torch.manual_seed(11)
    ours = get_attack("pgd-l2")(model, x, y, eps, alpha=alpha, steps=steps, random_start=random_start, **kw)
    torch.manual_seed(11)
    theirs = atk(x, t if goal == "label" else y)
    # float32: up to two ulps of 1 (a different rounding of the step, kept by the clamp to [0, 1]).
    torch.testing.assert_close(ours, theirs, rtol=0, atol={torch.float32: 2.5e-7, torch.float64: 1e-9}[dtype])
    assert not torch.equal(ours, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_deepfool_equals_torchattacks(dtype: torch.dtype) -> None:
    # Deterministic. eps large enough that the ball never binds (DeepFool has no radius of its own). Ours takes
    # the Jacobian of the whole batch at once, torchattacks image by image: float32 sums round differently.
    model, x, y = _model_and_data(dtype)
    ours = get_attack("deepfool")(model, x, y, 100.0, steps=50)
    theirs = torchattacks.DeepFool(model, steps=50, overshoot=0.02)(x, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol={torch.float32: 1e-6, torch.float64: 1e-12}[dtype])
    assert _fooled(model, ours, y).float().mean() >= 0.75  # unbounded, it breaks most images of a small model


class _PositiveLogits(torch.nn.Module):
    """The model's logits + 50. torchattacks' CW takes the best other logit as max((1 - onehot) * z), i.e. with the
    label's logit set to 0, not removed; that is the paper's max_{k != y} z_k only when every logit is > 0."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + 50


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("goal", ["untargeted", "label"])
def test_cw_l2_equals_torchattacks(dtype: torch.dtype, goal: str) -> None:
    # Deterministic (Adam from atanh(2x - 1)). Where torchattacks found an adversarial image, ours is the same one,
    # exactly; where it found none it returns x, ours the last iterate (projected onto the ball; here unbounded).
    base, x, y = _model_and_data(dtype)
    model = _PositiveLogits(base)
    t = (y + 1) % CLASSES
    atk = torchattacks.CW(model, c=1.0, kappa=0.0, steps=50, lr=0.01)
    kw: dict[str, object] = {}
    if goal == "label":
        _targeted(atk, goal, t)
        kw = {"targeted": True, "target": t}
    ours = get_attack("cw-l2")(model, x, y, 100.0, steps=50, **kw)
    theirs = atk(x, t if goal == "label" else y)
    found = (theirs != x).flatten(1).any(1)  # (B,) torchattacks found an adversarial image
    assert found.sum() >= 4
    torch.testing.assert_close(ours[found], theirs[found], rtol=0, atol=0)


# ---- the black-box and boundary attacks of AutoAttack: Square, FAB-T ------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [2 / 255, 8 / 255])
def test_square_equals_torchattacks(dtype: torch.dtype, eps: float) -> None:
    # Randomised, seeded: ours draws from a private generator what torchattacks draws from the global RNG after
    # torch.manual_seed(seed), in the same order, so the searches are the same: the same examples fooled, with the
    # same images (to an ulp in float32: eps rounded down). Two restarts, so the second draws after the first.
    model, x, y = _model_and_data(dtype)
    ours = get_attack("square")(model, x, y, eps, queries=200, restarts=2, seed=3)
    theirs = torchattacks.Square(model, eps=eps, n_queries=200, n_restarts=2, seed=3)(x, y)
    f_ours, f_theirs = _fooled(model, ours, y), _fooled(model, theirs, y)
    assert abs(int(f_ours.sum()) - int(f_theirs.sum())) <= 1  # the requirement; in fact equal:
    assert torch.equal(f_ours, f_theirs)
    assert (f_theirs & (model.eval()(x).argmax(1) == y)).any()  # not vacuous: some were attacked and fooled
    torch.testing.assert_close(ours[f_theirs], theirs[f_theirs], rtol=0, atol=1e-7)
    assert not torch.equal(get_attack("square")(model, x, y, eps, queries=200, restarts=2, seed=4), ours)


@pytest.mark.parametrize("eps", [2 / 255, 8 / 255])
@pytest.mark.parametrize("restarts", [1, 2])
def test_fab_t_equals_torchattacks(eps: float, restarts: int) -> None:
    # torchattacks' FAB with multi_targeted=True is FAB-T: n_classes - 1 targets (all 4 wrong classes here). One
    # restart is deterministic (it starts at x); later ones start at random points, seeded as for APGD. Ours
    # projects onto the linearised boundary by sorting (torchattacks bisects): the same steps to ~1e-7, the same
    # examples fooled, the same images to 1e-5 (under 1/300 of a grey level; the sort and the bisection round
    # differently, by 7e-6 at most on an AMD EPYC's kernels, 1e-6 on a Xeon's). float32 only: torchattacks' FAB
    # fails on float64 inputs.
    model, x, y = _model_and_data(torch.float32)
    ours = get_attack("fab-t")(model, x, y, eps, steps=20, targets=4, restarts=restarts, seed=3)
    theirs = torchattacks.FAB(model, eps=eps, steps=20, n_restarts=restarts, multi_targeted=True, n_classes=CLASSES,
                              seed=3)(x, y)
    f_ours, f_theirs = _fooled(model, ours, y), _fooled(model, theirs, y)
    assert abs(int(f_ours.sum()) - int(f_theirs.sum())) <= 1  # the requirement; in fact equal:
    assert torch.equal(f_ours, f_theirs)
    assert (f_theirs & (model.eval()(x).argmax(1) == y)).any()
    torch.testing.assert_close(ours[f_theirs], theirs[f_theirs], rtol=0, atol=1e-5)


def test_fab_projection_equals_torchattacks() -> None:
    # The minimal-L_inf step onto {w . z = b} within [0, 1]: every case, the hyperplane reached without the box
    # binding, with it binding, out of the box's reach, zero weights and pixels at 0 and 1.
    from torchattacks.attacks.fab import projection_linf

    from dla.attacks.fab import project_onto_hyperplane

    g = torch.Generator().manual_seed(0)
    t, w = torch.rand(64, 300, generator=g, dtype=torch.float64), torch.randn(64, 300, generator=g, dtype=torch.float64)
    w[:, :20], t[:, 20:50] = 0, t[:, 20:50].round()
    b = (w * t).sum(1) + torch.randn(64, generator=g, dtype=torch.float64) * torch.logspace(-3, 2, 64).double()
    ours = project_onto_hyperplane(t, w, b)
    torch.testing.assert_close(ours, projection_linf(t, w, b), rtol=0, atol=1e-12)
    assert ((t + ours).amin() >= -1e-12) and ((t + ours).amax() <= 1 + 1e-12)
    reached = ((w * (t + ours)).sum(1) - b).abs() < 1e-9
    assert 10 < int(reached.sum()) < 64  # both cases occur
