"""The AutoAttack-style suite: per-attack and worst-case robust accuracy; the gradient-masking checks fire on a
masked model (a non-differentiable quantising input layer) and stay quiet on a normal one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dla.attacks import AttackError, get_attack
from dla.attacks.masking import masking_warnings, more_effort, non_monotone, unbounded
from dla.attacks.suite import caption, evaluate_suite, suite_attacks

from .toys import images, tiny_model

STEPS = {"apgd-ce": {"steps": 10}, "apgd-t": {"steps": 10}}


class Quantise(nn.Module):
    """Rounds each pixel to one of 4 grey levels: the forward pass is fine, the input gradient is 0 everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 3) / 3


def _normal() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model, x = tiny_model().eval(), images(48)
    with torch.no_grad():
        y = model(x).argmax(1)  # every image classified correctly clean
    return model, x, y


def _masked() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model, x, y = _normal()
    return nn.Sequential(Quantise(), model), x, y


def test_worst_case_is_the_images_robust_to_every_attack() -> None:
    model, x, y = _normal()
    y[:6] = (y[:6] + 1) % 5  # six images misclassified clean: never robust
    rows = evaluate_suite(model, (x, y), ["apgd-ce", "apgd-t"], [0, 2 / 255, 8 / 255], batch_size=20, seed=1,
                          options=STEPS)
    assert [r["eps"] for r in rows] == [0, 2 / 255, 8 / 255] and all(r["n"] == 48 for r in rows)
    assert rows[0]["clean"] == rows[0]["worst"] == 42 / 48
    for r in rows:
        assert r["worst"] <= min(r["attacks"].values()) <= r["clean"] == 42 / 48
    # The worst case by hand: per image, robust to each attack (run on the clean-correct images, as the suite does).
    ok = (model(x).argmax(1) == y)
    robust = torch.ones(int(ok.sum()), dtype=torch.bool)
    for name in ("apgd-ce", "apgd-t"):
        x_adv = torch.cat([get_attack(name)(model, x[i:i + 20][ok[i:i + 20]], y[i:i + 20][ok[i:i + 20]], 8 / 255,
                                            steps=10, seed=1) for i in range(0, 48, 20)])
        mine = model(x_adv).argmax(1) == y[ok]
        assert mine.float().sum() / 48 == rows[2]["attacks"][name]
        robust &= mine
    assert robust.float().sum() / 48 == rows[2]["worst"] < rows[2]["attacks"]["apgd-ce"]  # APGD-T adds some


def test_suite_names_and_caption() -> None:
    assert suite_attacks("autoattack") == ("apgd-ce", "apgd-t")
    assert caption("autoattack") == ("autoattack subset: APGD-CE + APGD-T; the standard AutoAttack ensemble's "
                                     "FAB-T and Square are not run")
    with pytest.raises(AttackError, match="unknown suite 'aa'; known: autoattack"):
        suite_attacks("aa")
    with pytest.raises(AttackError, match="'apgd-ce' has no option 'alpha'"):
        evaluate_suite(tiny_model(), (images(2), torch.zeros(2, dtype=torch.long)), ["apgd-ce"], [0.1],
                       options={"apgd-ce": {"alpha": 0.1}})


def test_masking_checks_are_quiet_on_a_normal_model() -> None:
    model, x, y = _normal()
    rows = evaluate_suite(model, (x, y), ["apgd-ce", "apgd-t"], [0, 2 / 255, 8 / 255], options=STEPS)
    assert rows[-1]["worst"] < 0.5  # the attacks work on it
    assert masking_warnings(model, x, y, rows) == []


def test_masking_checks_fire_on_a_quantising_input_layer() -> None:
    model, x, y = _masked()
    rows = evaluate_suite(model, (x, y), ["apgd-ce", "apgd-t"], [0, 2 / 255, 8 / 255], options=STEPS)
    assert rows[-1]["worst"] > 0.5  # it looks robust: the gradient attacks cannot move
    warnings = masking_warnings(model, x, y, rows)
    assert any("an unbounded attack (PGD-50 at eps 1, the whole image cube) leaves" in w for w in warnings)
    assert any("more steps and restarts help much at eps 8/255" in w for w in warnings)
    assert all(w.startswith("WARNING (gradient masking?): ") for w in warnings)
    assert unbounded(*_normal()) == [] and more_effort(*_normal(), 8 / 255) == []


def test_accuracy_rising_with_eps_is_flagged_beyond_one_image() -> None:
    def row(eps: float, a: float, w: float) -> dict:
        return {"eps": eps, "n": 100, "clean": 0.9, "worst": w, "attacks": {"apgd-ce": a}}

    falling = [row(0, 0.9, 0.9), row(0.01, 0.5, 0.4), row(0.03, 0.2, 0.1)]
    assert non_monotone(falling) == []
    assert non_monotone([row(0, 0.9, 0.9), row(0.01, 0.5, 0.4), row(0.03, 0.51, 0.41)]) == []  # one image: noise
    rising = non_monotone([row(0.03, 0.3, 0.1), row(0, 0.9, 0.9), row(0.01, 0.2, 0.15)])  # sorted by eps first
    assert rising == ["WARNING (gradient masking?): apgd-ce accuracy rises with eps, 20.00% at eps 0.01 but 30.00% "
                      "at eps 0.03"]
