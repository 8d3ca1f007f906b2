"""Every registered attack honours the attack contract; the registry and the argument checks behave.

A new `@register_attack` enrols itself in the contract matrix below: no edit to this file is needed.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dla.attacks import AttackError, attack_mode, attack_names, fgsm, get_attack, pgd, register_attack
from dla.attacks import registry as registry_module
from dla.attacks.common import eps_in_dtype, project
from dla.attacks.l2 import l2_norms, project_l2

from .toys import CLASSES, SHAPE, images, labels, tiny_model

GOALS = ["untargeted", "targeted", "least_likely"]


def _goal_kwargs(goal: str, y: torch.Tensor) -> dict[str, object]:
    if goal == "targeted":
        return {"targeted": True, "target": (y + 1) % CLASSES}
    if goal == "least_likely":
        return {"least_likely": True}
    return {}


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def _assert_in_ball(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str = "linf") -> None:
    """||x_adv - x|| <= eps in the attack's norm (L_inf over the batch, L2 per image) and x_adv in [0, 1], however
    one measures: in x's dtype, as a Python float, in fp64."""
    if norm == "l2":
        d = l2_norms(x_adv - x)  # (B,)
        assert (d <= eps).all() and all(v <= eps for v in d.tolist())
        assert (l2_norms(x_adv.double() - x.double()) <= eps).all()
    else:
        d = (x_adv - x).abs().amax()
        assert d <= eps and d.item() <= eps
        assert (x_adv.double() - x.double()).abs().amax().item() <= eps
    assert x_adv.amin() >= 0 and x_adv.amax() <= 1


@pytest.mark.parametrize("name", attack_names())
@pytest.mark.parametrize("eps", [0.0, 1 / 255, 8 / 255])
@pytest.mark.parametrize("goal", GOALS)
@pytest.mark.parametrize("start", ["train", "mixed"])
def test_attack_contract(name: str, eps: float, goal: str, start: str) -> None:
    spec = get_attack(name)
    if goal != "untargeted" and not spec.targeted:
        pytest.skip(f"{name} is untargeted only")
    model = tiny_model().train()
    if start == "mixed":
        model[2].eval()  # a frozen BatchNorm inside a training model
        model[-1].bias.requires_grad_(False)  # a frozen parameter
    modes, flags = _modes(model), [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = images(8), labels(8)
    kw = _goal_kwargs(goal, y)
    before = (x.clone(), y.clone(), {k: v.clone() for k, v in kw.items() if isinstance(v, torch.Tensor)})

    torch.manual_seed(0)
    x_adv = spec(model, x, y, eps, **kw)

    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    _assert_in_ball(x_adv, x, eps, spec.norm)
    if eps == 0:
        assert torch.equal(x_adv, x)
    else:
        assert not torch.equal(x_adv, x)  # it did move
    assert _modes(model) == modes  # every module back in its own mode
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BatchNorm stats untouched
    assert torch.equal(x, before[0]) and torch.equal(y, before[1])  # inputs not mutated
    assert all(torch.equal(kw[k], v) for k, v in before[2].items())
    # Eval mode inside: the same seed gives the same result, whatever the mode the model is in.
    model.eval()
    torch.manual_seed(0)
    assert torch.equal(spec(model, x, y, eps, **kw), x_adv)


@pytest.mark.parametrize("name", attack_names())
def test_attack_leaves_a_grad_requiring_input_alone_and_ignores_no_grad(name: str) -> None:
    model, y = tiny_model(), labels(6)
    x = images(6).requires_grad_()
    x_before = x.detach().clone()
    torch.manual_seed(0)
    with torch.no_grad():  # a caller's no_grad does not stop an attack
        x_adv = get_attack(name)(model, x, y, 4 / 255)
    assert x.grad is None and torch.equal(x.detach(), x_before)
    torch.manual_seed(0)
    assert torch.equal(x_adv, get_attack(name)(model, x_before, y, 4 / 255))
    assert not torch.equal(x_adv, x_before)


@pytest.mark.parametrize("name", attack_names())
def test_attack_keeps_float64_and_handles_an_empty_batch(name: str) -> None:
    model = tiny_model(dtype=torch.float64)
    x_adv = get_attack(name)(model, images(4, dtype=torch.float64), labels(4), 8 / 255)
    assert x_adv.dtype == torch.float64
    empty = torch.rand(0, *SHAPE)
    assert get_attack(name)(model.float(), empty, torch.zeros(0, dtype=torch.long), 8 / 255).shape == empty.shape


@pytest.mark.parametrize("name", attack_names())
def test_state_is_restored_when_an_attack_fails(name: str) -> None:
    model = tiny_model().train()
    model[-1].bias.requires_grad_(False)
    modes, flags = _modes(model), [p.requires_grad for p in model.parameters()]
    x, y = images(3), labels(3)
    spec = get_attack(name)
    # Found only after a forward pass: a target class, or (untargeted-only attacks) a true label, out of range.
    kw, what = ({"targeted": True, "target": 7}, "target") if spec.targeted else ({}, "y")
    if not spec.targeted:
        y = torch.full((3,), 7)
    with pytest.raises(AttackError, match=f"{what} holds class 7, but the model has 5 classes"):
        spec(model, x, y, 8 / 255, **kw)
    assert _modes(model) == modes and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_attack_mode_restores_everything_even_on_an_exception() -> None:
    model = tiny_model().train()
    model[2].eval()
    model[1].weight.requires_grad_(False)
    modes, flags = _modes(model), [p.requires_grad for p in model.parameters()]
    with pytest.raises(RuntimeError, match="boom"), attack_mode(model):
        assert not any(_modes(model)) and not any(p.requires_grad for p in model.parameters())
        raise RuntimeError("boom")
    assert _modes(model) == modes and [p.requires_grad for p in model.parameters()] == flags


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("eps", [1 / 255, 8 / 255, 0.1, 0.3, 1 / 3])
def test_project_is_exact_despite_rounding(dtype: torch.dtype, eps: float) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4000, generator=g, dtype=torch.float64).to(dtype)
    x[:8] = torch.tensor([0.0, 1.0, 0.5, 0.25, 1 - 1e-7, 1e-7, 0.75, 0.999])
    x_adv = x + eps * (torch.randint(0, 3, x.shape, generator=g) - 1).to(dtype)  # x, x + eps, x - eps
    x_adv = x_adv + 1e-3 * torch.randn(x.shape, generator=g, dtype=torch.float64).to(dtype)  # and a little beyond
    _assert_in_ball(project(x_adv, x, eps), x, eps)
    assert eps_in_dtype(eps, dtype) <= eps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("eps", [1 / 255, 0.1, 0.5, 1 / 3])
def test_project_l2_is_exact_despite_rounding(dtype: torch.dtype, eps: float) -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.rand(64, 3, 6, 6, generator=g, dtype=torch.float64)
    d = torch.randn(x.shape, generator=g, dtype=torch.float64)
    length = eps * torch.rand(64, generator=g, dtype=torch.float64).add(0.5)  # (64,) in [eps / 2, 3 eps / 2)
    d = d / l2_norms(d).view(-1, 1, 1, 1) * length.view(-1, 1, 1, 1)
    x, x_adv = x.to(dtype), (x + d).to(dtype)  # half of them outside the ball, some clamped by [0, 1]
    out = project_l2(x_adv, x, eps)
    _assert_in_ball(out, x, eps, "l2")
    inside = (l2_norms(x_adv.double() - x.double()) < 0.99 * eps) & (x_adv.amin((1, 2, 3)) >= 0) & \
        (x_adv.amax((1, 2, 3)) <= 1)
    assert inside.any() and torch.equal(out[inside], x_adv[inside])  # already in: unchanged


def test_register_attack_checks_the_norm() -> None:
    with pytest.raises(ValueError, match="norm must be one of linf, l2; got 'l1'"):
        register_attack("l1-thing", "an L1 attack", norm="l1")


# ---- the registry and its errors -----------------------------------------------------------------------------


def test_builtin_attacks_are_registered() -> None:
    assert {"fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "pgd-l2", "cw-l2", "deepfool", "square",
            "fab-t"} <= set(attack_names())
    assert {n for n in attack_names() if get_attack(n).norm == "l2"} == {"pgd-l2", "cw-l2", "deepfool"}
    assert get_attack("fgsm").fn is fgsm and get_attack("pgd").fn is pgd
    assert "steps" in get_attack("pgd").options() and "steps" not in get_attack("fgsm").options()


def test_register_a_new_attack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module.ATTACKS, "_entries", dict(registry_module.ATTACKS.entries))

    @register_attack("noise", "a random sign step: the baseline a real attack must beat", targeted=False)
    def noise(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, eps: float, *, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return project(x + eps * torch.randn(x.shape, generator=g).sign(), x, eps)

    assert "noise" in attack_names()
    x = images(3)
    x_adv = get_attack("noise")(tiny_model(), x, None, 0.1, seed=1)
    _assert_in_ball(x_adv, x, 0.1)
    with pytest.raises(ValueError, match="registered twice"):
        register_attack("noise", "again")(noise)
    with pytest.raises(AttackError, match="'noise' has no option 'steps'; its options: seed"):
        get_attack("noise")(tiny_model(), x, None, 0.1, steps=3)


BAD_REQUESTS = [
    ("fgsm", {"eps": -0.1}, "eps must be a finite number >= 0"),
    ("fgsm", {"eps": float("nan")}, "eps must be a finite number >= 0"),
    ("fgsm", {"loss": "hinge"}, "loss must be 'ce'"),
    ("fgsm", {"target": 2}, "target= is given but targeted=False"),
    ("fgsm", {"targeted": True}, "targeted=True needs target="),
    ("fgsm", {"variant": "ovo"}, "variant='ovo' is a targeted loss"),
    ("fgsm", {"targeted": True, "target": 1, "variant": "ovx"}, "variant must be one of standard, ovo, ovr"),
    ("fgsm", {"least_likely": True, "target": 1}, "pass either it or target="),
    ("fgsm", {"targeted": True, "target": torch.zeros(2, dtype=torch.long)}, r"shape \(4,\) for this batch"),
    ("fgsm", {"targeted": True, "target": torch.zeros(4)}, "integer tensor"),
    ("fgsm", {"y": torch.tensor([0, 1, 2, 9])}, "y holds class 9, but the model has 5 classes"),
    ("fgsm", {"y": None}, "y .* is required for untargeted attacks"),
    ("fgsm", {"y": None, "targeted": True, "target": 1, "variant": "ovo"}, "required for untargeted attacks and"),
    ("fgsm", {"x": images(4) * 2 - 0.5}, r"images in \[0, 1\] \(models take \[0, 1\] images.*got min -0.5, max 1.5"),
    ("pgd", {"x": images(4) * 255}, r"got min 0, max 255: pass unnormalised images"),
    ("fgsm", {"targeted": True, "target": 5}, r"target holds class 5, but the model has 5 classes \(0 ... 4\)"),
    ("pgd", {"targeted": True, "target": -1}, "target holds class -1, but the model has 5 classes"),
    ("fgsm", {"x": (images(4) * 255).to(torch.uint8)}, "floating-point tensor"),
    ("pgd", {"steps": -1}, "steps must be an integer >= 0"),
    ("pgd", {"alpha": -1.0}, "alpha must be a finite step size > 0"),
    ("pgd", {"alpha": 0.0}, "alpha must be a finite step size > 0"),
    ("pgd", {"eps": -0.1}, "eps must be a finite number >= 0"),
    ("pgd", {"restarts": 0}, "restarts must be an integer >= 1"),
    ("pgd", {"restarts": 3, "random_start": False}, "restarts=3 needs random_start=True"),
    ("square", {"queries": 0}, "queries must be an integer >= 1; got 0"),
    ("square", {"p_init": 1.5}, r"p_init must be a fraction of the image in \(0, 1\]"),
    ("square", {"loss": "dlr"}, "loss must be one of margin, ce; got 'dlr'"),
    ("square", {"seed": 1.5}, "seed must be an integer"),
    ("square", {"x": images(4)[:, 0]}, r"square attacks images \(B, C, H, W\)"),
    ("fab-t", {"targets": 0}, "targets must be an integer >= 1; got 0"),
    ("fab-t", {"alpha_max": 2.0}, r"alpha_max must be a number in \[0, 1\]"),
    ("fab-t", {"beta": 0.0}, r"beta must be a number in \(0, 1\]"),
    ("fab-t", {"eta": -1.0}, "eta must be a finite number > 0"),
]


@pytest.mark.parametrize(("name", "kw", "match"), BAD_REQUESTS, ids=[m[:30] for _, _, m in BAD_REQUESTS])
def test_bad_requests_raise_one_clear_error(name: str, kw: dict[str, object], match: str) -> None:
    kw = dict(kw)
    args = {"x": kw.pop("x", images(4)), "y": kw.pop("y", labels(4)), "eps": kw.pop("eps", 8 / 255)}
    with pytest.raises(AttackError, match=match):
        get_attack(name)(tiny_model(), args["x"], args["y"], args["eps"], **kw)


def test_unknown_attack_and_non_logit_models() -> None:
    with pytest.raises(AttackError, match="unknown attack 'cw'; known: apgd-ce, apgd-dlr, apgd-t, cw-l2, deepfool, "
                                          "fab-t, fgsm, pgd, pgd-l2, square"):
        get_attack("cw")
    with pytest.raises(AttackError, match=r"logits \(B, K\); the model returned \(2, 4, 6, 6\)"):
        fgsm(tiny_model()[:2], images(2), labels(2), 0.1)
