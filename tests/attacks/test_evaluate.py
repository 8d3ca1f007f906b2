"""evaluate_attack's rows are the metrics of the attacked inputs; the attacks do break a trained model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dla.attacks import AttackError, evaluate_attack, fgsm, pgd
from dla.nn import Normalize

from ..conftest import DATA_ROOT, needs_mnist
from .toys import CLASSES, images, labels, tiny_model


def _by_hand(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Loss, accuracy and macro precision / recall over the classes present in labels or predictions, in loops."""
    with torch.no_grad():
        z = model.eval()(x_adv)
    pred = z.argmax(1).tolist()
    true = y.tolist()
    present = sorted(set(true) | set(pred))
    precision, recall = [], []
    for c in present:
        tp = sum(p == c and t == c for p, t in zip(pred, true, strict=True))
        n_pred, n_true = pred.count(c), true.count(c)
        precision.append(tp / n_pred if n_pred else 0.0)
        recall.append(tp / n_true if n_true else 0.0)
    return {
        "loss": float(F.cross_entropy(z, y)),
        "accuracy": sum(p == t for p, t in zip(pred, true, strict=True)) / len(true),
        "precision": sum(precision) / len(present),
        "recall": sum(recall) / len(present),
    }


def _check_row(row: dict[str, object], want: dict[str, float]) -> None:
    for k, v in want.items():
        assert row[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k


def test_rows_match_a_manual_computation() -> None:
    model, x, y = tiny_model(), images(23), labels(23)
    eps_list = [0.0, 2 / 255, 8 / 255]
    rows = evaluate_attack(model, (x, y), "fgsm", eps_list, batch_size=7)  # 4 batches, the last one short
    assert [r["eps"] for r in rows] == eps_list
    for row, eps in zip(rows, eps_list, strict=True):
        assert row["attack"] == "fgsm" and row["n"] == 23 and row["targeted"] is False and "success_rate" not in row
        _check_row(row, _by_hand(model, fgsm(model, x, y, eps), y))  # eval mode: batching changes nothing
    assert rows[0]["accuracy"] > rows[2]["accuracy"]


def test_a_loader_of_uint8_batches_gives_the_same_rows() -> None:
    model = tiny_model()
    x8 = (images(20) * 255).round().to(torch.uint8)
    y = labels(20)
    x = x8.float() / 255
    loader = [(x8[i : i + 6], y[i : i + 6]) for i in range(0, 20, 6)]  # what a DataLoader / TensorLoader yields
    kw = {"alpha": 1 / 255, "steps": 3, "random_start": False}
    from_loader = evaluate_attack(model, loader, "pgd", [0.0, 4 / 255], **kw)
    from_tensors = evaluate_attack(model, (x, y), "pgd", [0.0, 4 / 255], **kw)
    for a, b in zip(from_loader, from_tensors, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == (pytest.approx(b[k], rel=1e-6, abs=1e-7) if isinstance(a[k], float) else b[k]), k
    _check_row(from_loader[1], _by_hand(model, pgd(model, x, y, 4 / 255, **kw), y))


@pytest.mark.parametrize("how", ["int", "tensor", "least_likely"])
def test_targeted_rows_report_the_success_rate(how: str) -> None:
    model, x, y = tiny_model(), images(25), labels(25)
    with torch.no_grad():
        ll = model.eval()(x).argmin(1)
    t = {"int": torch.full_like(y, 2), "tensor": (y + 1) % CLASSES, "least_likely": ll}[how]
    kw = {"least_likely": True} if how == "least_likely" else {"targeted": True, "target": 2 if how == "int" else t}
    eps_list = [0.0, 8 / 255, 0.2]
    rows = evaluate_attack(model, (x, y), "pgd", eps_list, batch_size=10, random_start=False, steps=5, **kw)
    mask = t != y  # examples already of the target class do not count
    for row, eps in zip(rows, eps_list, strict=True):
        x_adv = pgd(model, x, y, eps, steps=5, random_start=False, targeted=True, target=t)
        with torch.no_grad():
            hit = model(x_adv).argmax(1) == t
        assert row["targeted"] is True
        assert row["success_rate"] == pytest.approx(float(hit[mask].float().mean()))
        _check_row(row, _by_hand(model, x_adv, y))
    assert rows[-1]["success_rate"] > rows[0]["success_rate"]


def test_bad_requests() -> None:
    model, x, y = tiny_model(), images(4), labels(4)
    with pytest.raises(AttackError, match="unknown attack 'bim'"):
        evaluate_attack(model, (x, y), "bim", [0.1])
    with pytest.raises(AttackError, match="'fgsm' has no option 'steps'"):
        evaluate_attack(model, (x, y), "fgsm", [0.1], steps=3)
    with pytest.raises(AttackError, match="eps must be a finite number >= 0"):
        evaluate_attack(model, (x, y), "fgsm", [0.1, -1.0])
    with pytest.raises(AttackError, match="targeted=True needs target="):
        evaluate_attack(model, (x, y), "fgsm", [0.1], targeted=True)
    with pytest.raises(AttackError, match="target has 3 labels but the data has at least 4 examples"):
        evaluate_attack(model, (x, y), "fgsm", [0.1], targeted=True, target=torch.zeros(3, dtype=torch.long))
    with pytest.raises(AttackError, match="target has 5 labels but the data has 4 examples"):
        evaluate_attack(model, (x, y), "fgsm", [0.1], targeted=True, target=torch.zeros(5, dtype=torch.long))
    with pytest.raises(AttackError, match="no examples"):
        evaluate_attack(model, [], "fgsm", [0.1])


# ---- a trained model ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """An MLP fit in about a second to 1,000 MNIST test digits; 500 others to attack."""
    from dla.data.registry import LoadContext, get_dataset

    data = get_dataset("mnist").load(LoadContext(root=DATA_ROOT, name="mnist"), False)
    x, y = data.x[:1500].float() / 255, data.y[:1500]
    torch.manual_seed(0)
    model = nn.Sequential(Normalize((0.1307,), (0.3081,)), nn.Flatten(), nn.Linear(784, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(150):
        i = torch.arange(step * 100, step * 100 + 100) % 1000
        opt.zero_grad()
        F.cross_entropy(model(x[i]), y[i]).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval(), x[1000:], y[1000:]


@needs_mnist
def test_attacks_break_a_trained_model(mnist_mlp: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, y = mnist_mlp
    clean, f = evaluate_attack(model, (x, y), "fgsm", [0.0, 0.1])
    torch.manual_seed(0)
    p0, p = evaluate_attack(model, (x, y), "pgd", [0.0, 0.1], alpha=0.01, steps=20)
    assert clean["accuracy"] > 0.8  # it did learn (0.86)
    assert {**p0, "attack": "fgsm"} == clean  # eps = 0 is the clean row, whatever the attack
    assert f["accuracy"] < clean["accuracy"] - 0.6  # FGSM at eps = 0.1 breaks most of it (0.86 -> 0.14)
    assert p["accuracy"] < f["accuracy"] and p["accuracy"] < 0.15  # and PGD more (0.09)
    assert p["loss"] > f["loss"] > clean["loss"]


@needs_mnist
def test_targeted_pgd_reaches_its_target_on_a_trained_model(
    mnist_mlp: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    # Reaching one given class takes a larger eps than leaving the true one: 0.2 here (0.3 is MNIST's usual).
    model, x, y = mnist_mlp
    eps_list, kw = [0.0, 0.1, 0.2], {"alpha": 0.025, "steps": 20}
    rates = {
        variant: [r["success_rate"] for r in evaluate_attack(
            model, (x, y), "pgd", eps_list, targeted=True, target=3, variant=variant, **kw)]
        for variant in ("standard", "ovo", "ovr")
    }
    rates["least_likely"] = [r["success_rate"] for r in evaluate_attack(
        model, (x, y), "pgd", eps_list, least_likely=True, **kw)]
    for variant, (r0, r1, r2) in rates.items():
        assert r0 < 0.05 and r0 < r1 < r2, (variant, rates)  # rising with eps from (almost) nothing
    assert rates["standard"][2] > 0.85 and min(r[2] for r in rates.values()) > 0.4, rates


def test_fgsm_table_takes_one_gradient_per_batch_and_equals_the_per_eps_loop(monkeypatch) -> None:
    """FGSM's direction at x does not depend on eps: an 11-eps table costs one backward pass per batch, and its
    rows are exactly those of calling the attack at every eps (bit for bit on the CPU)."""
    import dataclasses
    import sys

    from dla.attacks import common, registry

    model = tiny_model()
    x, y = images(40), labels(40)
    eps_list = [i / 255 for i in range(0, 11)]
    calls = []
    real = common.input_gradient
    monkeypatch.setattr(common, "input_gradient", lambda *a, **k: calls.append(1) or real(*a, **k))
    fgsm_module = sys.modules["dla.attacks.fgsm"]  # the package's attribute `fgsm` is the function
    monkeypatch.setattr(fgsm_module, "input_gradient", common.input_gradient)
    for kw in ({}, {"targeted": True, "target": 1}, {"targeted": True, "target": 1, "variant": "ovr"}):
        calls.clear()
        shared = evaluate_attack(model, (x, y), "fgsm", eps_list, batch_size=16, **kw)
        assert len(calls) == 3  # 40 images in batches of 16: one gradient per batch
        spec = registry.get_attack("fgsm")
        monkeypatch.setitem(registry.ATTACKS.entries, "fgsm", dataclasses.replace(spec, direction=None))
        calls.clear()
        naive = evaluate_attack(model, (x, y), "fgsm", eps_list, batch_size=16, **kw)
        assert len(calls) == 3 * (len(eps_list) - 1)  # once per batch and eps > 0
        monkeypatch.setitem(registry.ATTACKS.entries, "fgsm", spec)
        assert shared == naive


def test_lab_table_is_mean_and_sample_std_per_eps_and_metric() -> None:
    """The lab's attack table for a sweep: a row per eps, accuracy / loss / precision / recall as mean ± std."""
    import statistics

    from dla.attacks.run import metrics_by_eps

    runs = [[{"eps": 0.0, "accuracy": a, "loss": a / 2, "precision": a, "recall": a},
             {"eps": 8 / 255, "accuracy": a / 4, "loss": 3 * a, "precision": a / 3, "recall": a / 5}]
            for a in (0.80, 0.78, 0.83)]
    table = metrics_by_eps(runs).splitlines()
    assert table[0].split("|")[1:-1] == [" eps ", " Accuracy ", " Loss ", " Precision ", " Recall "]
    row8 = [c.strip() for c in table[3].split("|")[1:-1]]
    accs = [0.80 / 4, 0.78 / 4, 0.83 / 4]
    assert row8[0] == "8/255"
    assert row8[1] == f"{100 * statistics.mean(accs):.2f} ± {100 * statistics.stdev(accs):.2f}%"
    losses = [3 * a for a in (0.80, 0.78, 0.83)]
    assert row8[2] == f"{statistics.mean(losses):.4f} ± {statistics.stdev(losses):.4f}"
