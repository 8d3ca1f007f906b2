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
