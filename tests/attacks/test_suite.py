"""AutoAttack's ensemble: each attack on the images the previous left robust, the worst case per example; the
gradient-masking checks fire on a masked model (a non-differentiable quantising input layer) and stay quiet on a
normal one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dla.attacks import AttackError, get_attack
from dla.attacks.masking import masking_warnings, more_effort, non_monotone, square_beats_pgd, unbounded
from dla.attacks.suite import caption, evaluate_suite, suite_attacks

from .toys import images, tiny_model

STEPS = {"apgd-ce": {"steps": 10}, "apgd-t": {"steps": 10}}
FULL = {**STEPS, "fab-t": {"steps": 10}, "square": {"queries": 100}}  # the standard ensemble, a small budget


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


def test_each_attack_runs_on_what_the_previous_left_and_the_worst_case_is_the_last() -> None:
    model, x, y = _normal()
    y[:6] = (y[:6] + 1) % 5  # six images misclassified clean: never robust
    attacks = list(suite_attacks("autoattack"))
    rows = evaluate_suite(model, (x, y), attacks, [0, 2 / 255, 8 / 255], batch_size=20, seed=1, options=FULL)
    assert [r["eps"] for r in rows] == [0, 2 / 255, 8 / 255] and all(r["n"] == 48 for r in rows)
    assert rows[0]["clean"] == rows[0]["worst"] == 42 / 48
    for r in rows:
        acc = [r["attacks"][a] for a in attacks]
        assert r["clean"] >= acc[0] and acc == sorted(acc, reverse=True) and r["worst"] == acc[-1]
    # The cascade by hand, per batch of 20: each attack on the clean-correct images still robust before it.
    ok = model(x).argmax(1) == y
    after = {a: 0 for a in attacks}
    for i in range(0, 48, 20):
        xb, yb = x[i:i + 20][ok[i:i + 20]], y[i:i + 20][ok[i:i + 20]]
        robust = torch.ones(len(yb), dtype=torch.bool)
        for name in attacks:
            idx = robust.nonzero()[:, 0]
            torch.manual_seed(1)
            x_adv = get_attack(name)(model, xb[idx], yb[idx], 8 / 255, seed=1, **FULL[name])
            robust[idx] = model(x_adv).argmax(1) == yb[idx]
            after[name] += int(robust.sum())
    assert {a: c / 48 for a, c in after.items()} == rows[2]["attacks"]
    assert rows[2]["attacks"]["apgd-t"] < rows[2]["attacks"]["apgd-ce"]  # APGD-T breaks some APGD-CE left


def test_suite_names_and_caption() -> None:
    assert suite_attacks("autoattack") == ("apgd-ce", "apgd-t", "fab-t", "square")
    assert suite_attacks("autoattack-fast") == ("apgd-ce", "apgd-t")
    assert caption("autoattack") == ("autoattack: AutoAttack's standard ensemble, APGD-CE → APGD-T → FAB-T → SQUARE, "
                                     "each attack on the images the previous left robust, each column the robust "
                                     "accuracy after it and those before it")
    assert caption("autoattack-fast").startswith("autoattack-fast: APGD-CE → APGD-T, a subset of AutoAttack's "
                                                 "standard ensemble (FAB-T and Square not run: an upper bound")
    with pytest.raises(AttackError, match="unknown suite 'aa'; known: autoattack, autoattack-fast"):
        suite_attacks("aa")
    with pytest.raises(AttackError, match="'apgd-ce' has no option 'alpha'"):
        evaluate_suite(tiny_model(), (images(2), torch.zeros(2, dtype=torch.long)), ["apgd-ce"], [0.1],
                       options={"apgd-ce": {"alpha": 0.1}})


def test_masking_checks_are_quiet_on_a_normal_model() -> None:
    model, x, y = _normal()
    rows = evaluate_suite(model, (x, y), ["apgd-ce", "apgd-t"], [0, 2 / 255, 8 / 255], options=STEPS)
    assert rows[-1]["worst"] < 0.5  # the attacks work on it
    assert masking_warnings(model, x, y, rows, square_queries=300) == []


def test_masking_checks_fire_on_a_quantising_input_layer() -> None:
    model, x, y = _masked()
    rows = evaluate_suite(model, (x, y), ["apgd-ce", "apgd-t"], [0, 2 / 255, 8 / 255], options=STEPS)
    assert rows[-1]["worst"] > 0.5  # it looks robust: the gradient attacks cannot move
    warnings = masking_warnings(model, x, y, rows, square_queries=300)
    assert any("an unbounded attack (PGD-50 at eps 1, the whole image cube) leaves" in w for w in warnings)
    assert any("more steps and restarts help much at eps 8/255" in w for w in warnings)
    assert any("black-box Square (300 queries) beats white-box PGD-20 at eps 8/255" in w for w in warnings)
    assert all(w.startswith("WARNING (gradient masking?): ") for w in warnings)
    assert unbounded(*_normal()) == [] and more_effort(*_normal(), 8 / 255) == []
    assert square_beats_pgd(*_normal(), 8 / 255, queries=300) == []
    assert not any("Square" in w for w in masking_warnings(model, x, y, rows))  # no budget: the check is skipped


def test_accuracy_rising_with_eps_is_flagged_beyond_one_image() -> None:
    def row(eps: float, a: float, w: float) -> dict:
        return {"eps": eps, "n": 100, "clean": 0.9, "worst": w, "attacks": {"apgd-ce": a}}

    falling = [row(0, 0.9, 0.9), row(0.01, 0.5, 0.4), row(0.03, 0.2, 0.1)]
    assert non_monotone(falling) == []
    assert non_monotone([row(0, 0.9, 0.9), row(0.01, 0.5, 0.4), row(0.03, 0.51, 0.41)]) == []  # one image: noise
    rising = non_monotone([row(0.03, 0.3, 0.1), row(0, 0.9, 0.9), row(0.01, 0.2, 0.15)])  # sorted by eps first
    assert rising == ["WARNING (gradient masking?): apgd-ce accuracy rises with eps, 20.00% at eps 0.01 but 30.00% "
                      "at eps 0.03"]
