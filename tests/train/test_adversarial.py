"""Adversarial training: the config section, the criterion against a hand computation, and real MNIST runs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dla.attacks import evaluate_attack, fgsm, pgd
from dla.config import load_config
from dla.errors import ConfigError
from dla.train import run_experiment
from dla.train.checkpoint import load_checkpoint
from dla.train.guard import AdversarialGuard
from dla.train.loop import Trainer
from dla.train.losses import Adversarial, CrossEntropy, build_criterion
from dla.train.restore import load_trained

from ..conftest import DATA_ROOT, QUICK, needs_mnist


def _net(norm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(3 * 4 * 4, 16)]
    layers += [nn.BatchNorm1d(16)] if norm else []
    return nn.Sequential(*layers, nn.ReLU(), nn.Linear(16, 5))


def _batch(b: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(b, 3, 4, 4, generator=g), torch.randint(0, 5, (b,), generator=g)


def _criterion(model: nn.Module, method: str = "pgd", mix: float = 1.0, ls: float = 0.0) -> Adversarial:
    return Adversarial(model, method, eps=0.1, alpha=0.03, steps=4, random_start=True, mix=mix, label_smoothing=ls)


# ---------------------------------------------------------------------------------------------------------------
# Config


def test_the_section_defaults_to_off_and_takes_fractions() -> None:
    cfg = load_config("mnist_mlp")
    assert cfg.train.adversarial.method == "none"
    cfg = load_config("mnist_mlp", ["train.adversarial.method=pgd", "train.adversarial.eps=8/255",
                                    "train.adversarial.mix=1"])
    adv = cfg.train.adversarial
    assert (adv.method, adv.eps, adv.mix, adv.steps) == ("pgd", 8 / 255, 1.0, 7)


@pytest.mark.parametrize(("override", "message"), [
    ("train.adversarial.method=cw", "must be one of none, fgsm, pgd; got 'cw'"),
    ("train.adversarial.eps=2", "'train.adversarial.eps' must be <= 1; got 2.0"),
    ("train.adversarial.eps=-0.1", "'train.adversarial.eps' must be >= 0"),
    ("train.adversarial.steps=0", "'train.adversarial.steps' must be >= 1; got 0"),
    ("train.adversarial.mix=1.5", "'train.adversarial.mix' must be <= 1"),
    ("train.adversarial.alpha=x", "'train.adversarial.alpha' must be a number; got 'x'"),
    ("train.adversarial.fraction=0", "'train.adversarial.fraction' must be > 0"),
    ("train.adversarial.fraction=1.5", "'train.adversarial.fraction' must be <= 1"),
    ("train.adversarial.guard_drop=0", "'train.adversarial.guard_drop' must be > 0"),
    ("train.adversarial.epsilon=0.1", "unknown config key 'train.adversarial.epsilon' (did you mean 'eps'?)"),
])
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("mnist_mlp", ["train.adversarial.method=pgd", override])
    assert message in str(info.value)


def test_with_distillation_or_at_eps_zero_it_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"train.adversarial and distill.teacher are not supported together"):
        load_config("distill", ["distill.teacher=somewhere", "train.adversarial.method=fgsm"])
    with pytest.raises(ConfigError, match=r"needs train.adversarial.eps > 0"):
        load_config("mnist_mlp", ["train.adversarial.method=pgd", "train.adversarial.eps=0"])
    load_config("mnist_mlp", ["train.adversarial.eps=0"])  # off: eps is not used


def test_build_criterion_picks_it_and_hands_it_the_model() -> None:
    model = _net()
    cfg = load_config("mnist_mlp", ["train.adversarial.method=fgsm", "train.adversarial.eps=0.2",
                                    "train.adversarial.mix=0.3", "train.label_smoothing=0"])
    crit = build_criterion(cfg, None, torch.device("cpu"), model)  # splits are only read for distillation
    assert isinstance(crit, Adversarial) and crit.model is model
    assert (crit.method, crit.eps, crit.mix, crit.alpha) == ("fgsm", 0.2, 0.3, None)  # alpha 0 = pgd's default
    assert isinstance(build_criterion(load_config("mnist_mlp"), None, torch.device("cpu"), model), CrossEntropy)


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_a_target_makes_targeted_copies_and_trains_on_the_true_labels(method: str) -> None:
    model, (x, y) = _net(), _batch()
    crit = Adversarial(model, method, eps=0.1, alpha=0.03, steps=4, random_start=True, mix=1.0, label_smoothing=0.0,
                       target=3)
    torch.manual_seed(7)
    loss = crit(model(x), y, x, torch.arange(len(y)))
    torch.manual_seed(7)
    x_adv = fgsm(model, x, y, 0.1, targeted=True, target=3) if method == "fgsm" else \
        pgd(model, x, y, 0.1, 0.03, 4, random_start=True, targeted=True, target=3)
    torch.testing.assert_close(loss, F.cross_entropy(model(x_adv), y), rtol=0, atol=0)
    with torch.no_grad():  # the copies move toward class 3
        assert F.cross_entropy(model(x_adv), torch.full_like(y, 3)) < F.cross_entropy(model(x), torch.full_like(y, 3))


def test_a_target_outside_the_classes_is_one_line() -> None:
    from types import SimpleNamespace

    cfg = load_config("mnist_mlp", ["train.adversarial.method=fgsm", "train.adversarial.target=10"])
    with pytest.raises(ConfigError, match=r"train.adversarial.target=10 is not a class of mnist \(0 .. 9\)"):
        build_criterion(cfg, SimpleNamespace(classes=[str(i) for i in range(10)]), torch.device("cpu"), _net())
    with pytest.raises(ConfigError, match=r"'train\.adversarial\.target' must be >= -1"):
        load_config("mnist_mlp", ["train.adversarial.target=-2"])


# ---------------------------------------------------------------------------------------------------------------
# The criterion by hand


def test_mix_zero_is_cross_entropy_and_makes_no_examples() -> None:
    model, (x, y) = _net(), _batch()
    logits = model(x)
    state = torch.get_rng_state()
    loss = _criterion(model, mix=0.0, ls=0.1)(logits, y, x, torch.arange(len(y)))
    torch.testing.assert_close(loss, F.cross_entropy(logits, y, label_smoothing=0.1), rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), state)  # no random start drawn: plain training is replayed exactly


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_mix_one_is_cross_entropy_on_the_attack_library_s_examples(method: str) -> None:
    model, (x, y) = _net(), _batch()
    crit = _criterion(model, method, mix=1.0)
    torch.manual_seed(7)
    loss = crit(model(x), y, x, torch.arange(len(y)))
    torch.manual_seed(7)
    x_adv = fgsm(model, x, y, 0.1) if method == "fgsm" else pgd(model, x, y, 0.1, 0.03, 4, random_start=True)
    torch.testing.assert_close(loss, F.cross_entropy(model(x_adv), y), rtol=0, atol=0)
    assert loss > F.cross_entropy(model(x), y)  # the examples are adversarial


def test_a_mix_weighs_both_losses_and_both_gradients() -> None:
    model, (x, y) = _net(), _batch()
    crit = _criterion(model, "pgd", mix=0.3, ls=0.05)
    torch.manual_seed(3)
    loss = crit(model(x), y, x, torch.arange(len(y)))  # the clean graph is built before the attack runs
    loss.backward()
    got = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    torch.manual_seed(3)
    x_adv = pgd(model, x, y, 0.1, 0.03, 4)
    clean, adv = (F.cross_entropy(model(v), y, label_smoothing=0.05) for v in (x, x_adv))
    want = 0.7 * clean + 0.3 * adv
    want.backward()
    torch.testing.assert_close(loss, want)
    for g, p in zip(got, model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad)


def test_batchnorm_sees_the_attack_in_eval_mode_and_trains_on_it_in_train_mode() -> None:
    model, (x, y) = _net(norm=True).train(), _batch()
    reference = copy.deepcopy(model)
    crit = _criterion(model, "pgd", mix=1.0)
    torch.manual_seed(5)
    crit(model(x), y, x, torch.arange(len(y)))
    assert model.training and all(p.requires_grad for p in model.parameters())
    # By hand: a clean train-mode forward, the attack (eval mode: no BatchNorm update), one train-mode forward.
    reference(x)
    torch.manual_seed(5)
    x_adv = pgd(reference, x, y, 0.1, 0.03, 4)
    reference(x_adv)
    bn, bn_ref = model[2], reference[2]
    torch.testing.assert_close(bn.running_mean, bn_ref.running_mean)
    torch.testing.assert_close(bn.running_var, bn_ref.running_var)
    assert int(bn.num_batches_tracked) == 2


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_fraction_one_is_the_whole_batch_exactly(method: str) -> None:
    model, (x, y) = _net(), _batch()
    losses = []
    for fraction in (None, 1.0):
        crit = _criterion(model, method) if fraction is None else Adversarial(
            model, method, eps=0.1, alpha=0.03, steps=4, random_start=True, mix=1.0, label_smoothing=0.0,
            fraction=fraction)
        torch.manual_seed(7)
        losses.append(crit(model(x), y, x, torch.arange(len(y))))
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_fraction_half_attacks_the_first_half_and_keeps_the_rest_clean(method: str) -> None:
    model, (x, y) = _net(), _batch(12)
    crit = Adversarial(model, method, eps=0.1, alpha=0.03, steps=4, random_start=True, mix=0.5, label_smoothing=0.0,
                       fraction=0.5)
    torch.manual_seed(7)
    loss = crit(model(x), y, x, torch.arange(12))
    # By hand: rows 0-5 adversarial (attacked on their own: the random start has their shape), rows 6-11 clean.
    torch.manual_seed(7)
    head = fgsm(model, x[:6], y[:6], 0.1) if method == "fgsm" else pgd(model, x[:6], y[:6], 0.1, 0.03, 4)
    mixed = torch.cat([head, x[6:]])
    assert not torch.equal(head, x[:6])
    want = 0.5 * F.cross_entropy(model(x), y) + 0.5 * F.cross_entropy(model(mixed), y)
    torch.testing.assert_close(loss, want, rtol=0, atol=0)
    per_row = F.cross_entropy(model(mixed), y, reduction="none") - F.cross_entropy(model(x), y, reduction="none")
    assert torch.all(per_row[6:] == 0) and per_row[:6].mean() > 0


# ---------------------------------------------------------------------------------------------------------------
# The catastrophic-overfitting guard


def test_the_guard_is_on_for_fgsm_by_default_and_can_be_set() -> None:
    def guarded(*overrides: str) -> bool:
        return load_config("mnist_mlp", list(overrides)).train.adversarial.guarded

    assert guarded("train.adversarial.method=fgsm") and not guarded("train.adversarial.method=pgd")
    assert not guarded("train.adversarial.method=fgsm", "train.adversarial.guard=false")
    assert guarded("train.adversarial.method=pgd", "train.adversarial.guard=true")
    assert not guarded("train.adversarial.guard=true")  # no adversarial training: nothing to guard


def test_the_guard_flags_a_drop_from_the_best_and_keeps_the_last_good_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config("mnist_mlp", ["train.adversarial.method=fgsm", "train.adversarial.guard_drop=0.2"])
    model, (x, y) = _net(), _batch(8)
    guard = AdversarialGuard(cfg.train.adversarial, x, y)
    accuracy = iter([0.5, 0.6, 0.45, 0.39])
    monkeypatch.setattr(AdversarialGuard, "robust_accuracy", lambda self, m: next(accuracy))
    for epoch in (1, 2, 3):  # 0.45 is 0.15 below the best 0.6: not a collapse
        guard.measure(model, epoch)
        assert not guard.collapsed
        with torch.no_grad():
            model[1].weight.add_(1.0)
    guard.measure(model, 4)  # 0.39 < 0.6 - 0.2
    assert guard.collapsed and guard.good_epoch == 3 and guard.best_epoch == 2
    torch.testing.assert_close(guard.good_weights["1.weight"], model[1].weight.detach() - 1)
    assert "fell to 39.0% in epoch 4 (best 60.0% at epoch 2); stopped with the weights of epoch 3" in guard.message(4)


def test_the_guard_s_own_pgd_is_seeded_and_leaves_the_global_rng_alone() -> None:
    cfg = load_config("mnist_mlp", ["train.adversarial.method=fgsm", "train.adversarial.eps=0.3"])
    model, (x, y) = _net(), _batch(32)
    guard = AdversarialGuard(cfg.train.adversarial, x, y)
    state = torch.get_rng_state()
    first = guard.robust_accuracy(model)
    assert guard.robust_accuracy(model) == first and torch.equal(torch.get_rng_state(), state)
    assert model.training and first < (model(x).argmax(1) == y).float().mean().item()


# ---------------------------------------------------------------------------------------------------------------
# Real runs

TINY = [*QUICK, "tracking.tensorboard=false"]


@needs_mnist
def test_mix_zero_trains_the_same_weights_as_plain_training(tmp_path: Path) -> None:
    plain = run_experiment(load_config("mnist_mlp", [*TINY, "train.epochs=1", "run_name=plain"]), tmp_path, DATA_ROOT)
    mixed = run_experiment(load_config("mnist_mlp", [*TINY, "train.epochs=1", "run_name=adv",
                                                     "train.adversarial.method=pgd", "train.adversarial.mix=0"]),
                           tmp_path, DATA_ROOT)
    a, b = (load_checkpoint(r.last)["model"] for r in (plain, mixed))  # dropout 0.1: the RNG streams must match too
    assert all(torch.equal(a[k], b[k]) for k in a)


@needs_mnist
def test_a_short_adversarial_run_is_more_robust_than_a_standard_one(tmp_path: Path) -> None:
    common = ["data.limit_train=3000", "data.val_size=500", "data.limit_test=300", "data.batch_size=100",
              "data.augment.crop_padding=0", "model.width=128", "model.dropout=0", "model.norm=none",
              "train.label_smoothing=0", "train.epochs=3", "tracking.progress=off", "tracking.tensorboard=false",
              "train.adversarial.eps=0.1", "train.adversarial.steps=3", "train.adversarial.alpha=0.04",
              "train.adversarial.mix=1"]
    robust = {}
    for method in ("none", "pgd"):
        run = run_experiment(load_config("mnist_mlp", [*common, f"train.adversarial.method={method}",
                                                       f"run_name={method}"]), tmp_path, DATA_ROOT)
        trained = load_trained(run.path, DATA_ROOT)
        torch.manual_seed(0)
        rows = evaluate_attack(trained.model, (trained.test_x, trained.test_y), "pgd", [0.0, 0.1], steps=10)
        robust[method] = rows
    clean_std, pgd_std = (r["accuracy"] for r in robust["none"])
    clean_adv, pgd_adv = (r["accuracy"] for r in robust["pgd"])
    assert clean_std > 0.8 and clean_adv > 0.7  # both learnt the digits (measured: 0.90, 0.81)
    assert pgd_adv > pgd_std + 0.2, robust  # measured: 0.22 standard vs 0.53 adversarial


@needs_mnist
def test_a_collapse_stops_training_with_the_weights_of_the_epoch_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    snapshots: list[dict[str, torch.Tensor]] = []
    accuracy = iter([0.6, 0.1, 0.1])  # epoch 2 collapses (0.5 below the best)

    def fake(self: AdversarialGuard, model: nn.Module) -> float:
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(accuracy)

    tested: list[dict[str, torch.Tensor]] = []
    real_test = Trainer.test

    def test(self: Trainer) -> dict[str, float]:
        tested.append({k: v.clone() for k, v in self.model.state_dict().items()})  # the weights fit() ended with
        return real_test(self)

    monkeypatch.setattr(AdversarialGuard, "robust_accuracy", fake)
    monkeypatch.setattr(Trainer, "test", test)
    run = run_experiment(load_config("mnist_mlp", [*TINY, "train.epochs=3", "run_name=guarded",
                                                   "train.adversarial.method=fgsm"]), tmp_path, DATA_ROOT)
    out = capsys.readouterr().out
    assert len(snapshots) == 2 and "epoch   3/" not in out  # stopped after epoch 2
    assert "catastrophic overfitting: PGD-10 accuracy at eps 0.1" in out
    assert "fell to 10.0% in epoch 2 (best 60.0% at epoch 1); stopped with the weights of epoch 1" in out
    assert "robust 60.00%" in out
    epoch1 = snapshots[0]
    assert all(torch.equal(tested[0][k], epoch1[k]) for k in epoch1)
    assert not all(torch.equal(snapshots[1][k], epoch1[k]) for k in epoch1)
    for path in (run.last, run.best):  # neither checkpoint holds the collapsed epoch
        ckpt = load_checkpoint(path)
        assert ckpt["epoch"] == 1 and all(torch.equal(ckpt["model"][k], epoch1[k]) for k in epoch1)
