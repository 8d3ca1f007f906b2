"""The attacks compute what their papers say: closed forms on a linear model, PGD's special cases, restarts, targets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dla.attacks import fgsm, least_likely_target, pgd
from dla.attacks.common import Goal

from .toys import CLASSES, STD, images, labels, linear_model, tiny_model

TARGETED = [
    ("untargeted", {}),
    ("standard", {"targeted": True, "variant": "standard"}),
    ("ovo", {"targeted": True, "variant": "ovo"}),
    ("ovr", {"targeted": True, "variant": "ovr"}),
]


def _with_target(kw: dict[str, object], y: torch.Tensor) -> dict[str, object]:
    return {**kw, "target": (y + 2) % CLASSES} if kw else {}


@pytest.mark.parametrize(("variant", "kw"), TARGETED, ids=[v for v, _ in TARGETED])
def test_fgsm_on_a_linear_model_is_the_closed_form(variant: str, kw: dict[str, object]) -> None:
    # z = W (x - m) / s + b, so grad_x z_k = W_k / s (per pixel) and grad_x CE(z, c) = (p - onehot_c)^T W / s.
    # The step is checked against these by hand, not against autograd.
    model = linear_model()
    x, y = images(9, dtype=torch.float64), labels(9)
    t = (y + 2) % CLASSES
    w = model[2].weight.detach()  # (K, D)
    s = torch.tensor(STD, dtype=torch.float64).repeat_interleave(x[0, 0].numel())  # (D,): pixel-wise std
    with torch.no_grad():
        p = torch.softmax(model(x), dim=1)  # (B, K)
    grads = {  # the gradient of what each variant ascends, in units of W rows; (B, D)
        "untargeted": p @ w - w[y],  # grad of CE(y)
        "standard": w[t] - p @ w,  # grad of -CE(t)
        "ovo": w[t] - w[y],  # grad of CE(y) - CE(t): the softmax terms cancel
        "ovr": w[t] - (w.sum(0) - w[t]) / (CLASSES - 1),  # grad of mean_{k != t} CE(k) - CE(t)
    }
    eps = 0.05
    by_hand = (x.flatten(1) + eps * (grads[variant] / s).sign()).clamp(0, 1).view_as(x)
    x_adv = fgsm(model, x, y, eps, **_with_target(kw, y))
    torch.testing.assert_close(x_adv, by_hand, rtol=0, atol=1e-15)
    # The untargeted step raises CE(y) and the targeted ones lower CE(t): each moved the way it should.
    with torch.no_grad():
        before, after = model(x), model(x_adv)
    if variant == "untargeted":
        assert (F.cross_entropy(after, y, reduction="none") > F.cross_entropy(before, y, reduction="none")).all()
    else:
        assert (F.cross_entropy(after, t, reduction="none") < F.cross_entropy(before, t, reduction="none")).all()


def test_variant_objectives_are_the_cross_entropy_differences_they_are_named_after() -> None:
    z = torch.randn(6, CLASSES, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 3
    y, t = labels(6), (labels(6) + 1) % CLASSES
    ce = torch.stack([F.cross_entropy(z, torch.full_like(y, k), reduction="none") for k in range(CLASSES)], 1)
    rows = torch.arange(6)
    ce_y, ce_t = ce[rows, y], ce[rows, t]
    mean_rest = (ce.sum(1) - ce_t) / (CLASSES - 1)
    torch.testing.assert_close(Goal(y, None).objective(z), ce_y)
    torch.testing.assert_close(Goal(y, t, "standard").objective(z), -ce_t)
    torch.testing.assert_close(Goal(y, t, "ovo").objective(z), ce_y - ce_t)
    torch.testing.assert_close(Goal(y, t, "ovr").objective(z), mean_rest - ce_t)


@pytest.mark.parametrize(("variant", "kw"), TARGETED, ids=[v for v, _ in TARGETED])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pgd_with_one_full_step_from_x_is_fgsm(variant: str, kw: dict[str, object], dtype: torch.dtype) -> None:
    model, x, y = tiny_model(dtype=dtype), images(8, dtype=dtype), labels(8)
    kw = _with_target(kw, y)
    for eps in (1 / 255, 8 / 255, 0.1):
        one_step = pgd(model, x, y, eps, alpha=eps, steps=1, random_start=False, **kw)
        torch.testing.assert_close(one_step, fgsm(model, x, y, eps, **kw), rtol=0, atol=2e-7)


def _objective_and_success(model: torch.nn.Module, x_adv: torch.Tensor, goal: Goal) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        z = model.eval()(x_adv)
    return goal.objective(z), goal.success(z)


@pytest.mark.parametrize("targeted", [False, True])
def test_restarts_keep_the_best_run_per_example(targeted: bool) -> None:
    model, x = tiny_model(), images(32)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)  # correctly classified to start with, so success varies across examples
    t = (y + 1) % CLASSES
    kw = {"targeted": True, "target": t} if targeted else {}
    goal = Goal(y, t if targeted else None)
    eps, alpha, steps = 3 / 255, 1 / 255, 2  # weak: some examples succeed, some do not

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(5)

    best = pgd(model, x, y, eps, alpha, steps, restarts=4, generator=gen(), **kw)
    # The same four runs one by one: each draws its random start from the same generator in turn.
    g = gen()
    runs = [pgd(model, x, y, eps, alpha, steps, generator=g, **kw) for _ in range(4)]
    scored = [_objective_and_success(model, r, goal) for r in runs]
    obj, ok = torch.stack([s[0] for s in scored]), torch.stack([s[1] for s in scored])  # (R, B) each
    pick = torch.zeros(32, dtype=torch.long)
    for r in range(1, 4):  # success first, then the higher objective; ties keep the earlier run
        cur_ok, cur_obj = ok[pick, torch.arange(32)], obj[pick, torch.arange(32)]
        better = (ok[r] & ~cur_ok) | ((ok[r] == cur_ok) & (obj[r] > cur_obj))
        pick = torch.where(better, r, pick)
    by_hand = torch.stack(runs)[pick, torch.arange(32)]
    assert torch.equal(best, by_hand)
    assert 0 < int(ok.any(0).sum()) < 32 and len(set(pick.tolist())) > 1  # the rule had something to decide

    # Against one restart: success never lost; where success is unchanged, the objective never lower.
    best_obj, best_ok = _objective_and_success(model, best, goal)
    assert (best_ok >= ok[0]).all()
    same = best_ok == ok[0]
    assert (best_obj[same] >= obj[0][same]).all()
    assert best_ok.sum() >= ok.sum(1).max()  # at least as many successes as the best single run


def test_pgd_random_start_is_uniform_in_the_ball_and_seeded_by_the_generator() -> None:
    model, x, y = tiny_model(), images(16), labels(16)
    x[:] = 0.5  # away from the [0, 1] edges, so the start is not clamped
    eps = 0.1
    start = pgd(model, x, y, eps, steps=0, generator=torch.Generator().manual_seed(1))
    noise = start - x
    assert noise.abs().max() <= eps and noise.min() < -0.09 and noise.max() > 0.09
    assert abs(float(noise.mean())) < 0.01 and abs(float(noise.std()) - eps / 3**0.5) < 0.01  # U(-eps, eps)
    again = pgd(model, x, y, eps, steps=0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(start, again)
    torch.manual_seed(1)
    global_rng = pgd(model, x, y, eps, steps=0)
    torch.manual_seed(1)
    assert torch.equal(global_rng, (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1))


def test_least_likely_targets_the_argmin_of_the_clean_logits() -> None:
    model, x, y = tiny_model().train(), images(12), labels(12)
    with torch.no_grad():
        ll = model.eval()(x).argmin(1)  # eval mode: the clean logits the attack sees
    model.train()
    assert torch.equal(least_likely_target(model.eval(), x), ll)
    model.train()
    g = torch.Generator
    got = pgd(model, x, y, 8 / 255, generator=g().manual_seed(2), least_likely=True)
    want = pgd(model, x, y, 8 / 255, generator=g().manual_seed(2), targeted=True, target=ll)
    assert torch.equal(got, want)
    step_ll = fgsm(model, x, y, 8 / 255, least_likely=True)  # Kurakin et al.'s "step l.l."
    assert torch.equal(step_ll, fgsm(model, x, y, 8 / 255, targeted=True, target=ll))
    assert torch.equal(fgsm(model, x, None, 8 / 255, least_likely=True), step_ll)  # y is not needed
    # It pulls toward the least-likely class: that class's logit gains on the rest.
    with torch.no_grad():
        before, after = model.eval()(x), model(got)
    margin = Goal(None, ll, "ovr").objective
    assert (margin(after) > margin(before)).all()


def test_an_int_target_is_the_same_target_for_every_example() -> None:
    model, x, y = tiny_model(), images(6), labels(6)
    three = torch.full((6,), 3)
    for variant in ("standard", "ovo", "ovr"):
        a = fgsm(model, x, y, 0.05, targeted=True, target=3, variant=variant)
        assert torch.equal(a, fgsm(model, x, y, 0.05, targeted=True, target=three, variant=variant))
