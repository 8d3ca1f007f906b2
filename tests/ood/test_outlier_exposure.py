"""Outlier exposure as a training criterion: the loss by hand, the config's checks, a real (tiny) training run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dla.config import ConfigError, load_config
from dla.data import load_splits
from dla.train import run_experiment
from dla.train.losses import OutlierExposure, build_criterion, uniform_cross_entropy

from ..conftest import DATA_ROOT, QUICK, needs_mnist


def test_uniform_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0], [5.0, 1.0, 1.0]], dtype=torch.float64)
    by_hand = 0.0
    for row in logits.tolist():
        log_z = math.log(sum(math.exp(v) for v in row))
        by_hand += -sum(v - log_z for v in row) / len(row)  # CE(uniform, softmax) = -(1/K) sum_k log p_k
    assert float(uniform_cross_entropy(logits)) == pytest.approx(by_hand / len(logits), rel=1e-12)
    assert float(uniform_cross_entropy(torch.zeros(4, 7))) == pytest.approx(math.log(7))  # its minimum: log K


def test_criterion_is_ce_plus_lambda_times_uniform_ce_on_a_seeded_auxiliary_batch() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    aux = torch.randint(0, 256, (50, 1, 4, 4), dtype=torch.uint8)
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    crit = OutlierExposure(model, aux, weight=0.7, batch_size=5, label_smoothing=0.0)

    torch.manual_seed(42)
    loss = crit(model(x), y, x, torch.arange(8))
    torch.manual_seed(42)  # the same draw, by hand: five indices from the global RNG, with replacement
    idx = torch.randint(0, 50, (5,))
    aux_logits = model(aux[idx].float() / 255)
    ce = sum(-torch.log_softmax(model(x)[i], 0)[y[i]] for i in range(8)) / 8
    uniform = sum(-torch.log_softmax(aux_logits[j], 0).sum() / 3 for j in range(5)) / 5
    torch.testing.assert_close(loss, ce + 0.7 * uniform)
    # The gradient reaches the weights through both terms; weight 0 is plain cross-entropy.
    loss.backward()
    assert model[1].weight.grad is not None
    off = OutlierExposure(model, aux, weight=0.0, batch_size=5, label_smoothing=0.0)
    torch.testing.assert_close(off(model(x), y, x, torch.arange(8)), F.cross_entropy(model(x), y))


@needs_mnist
def test_build_criterion_loads_the_auxiliary_set_in_the_id_shape() -> None:
    cfg = load_config("oe_mnist", ["train.outlier_exposure.dataset=noise", "train.outlier_exposure.batch_size=7",
                                   "train.outlier_exposure.weight=0.25", "data.limit_train=1000", "data.val_size=100"])
    splits = load_splits(cfg.data, DATA_ROOT, cfg.seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    crit = build_criterion(cfg, splits, torch.device("cpu"), model)
    assert isinstance(crit, OutlierExposure) and crit.model is model and crit.weight == 0.25
    assert crit.aux.dtype == torch.uint8 and crit.aux.shape[1:] == (1, 28, 28)  # noise made grey 28x28
    assert crit.aux_batch().shape == (7, 1, 28, 28)
    with pytest.raises(ValueError, match="outlier exposure needs the model"):
        build_criterion(cfg, splits, torch.device("cpu"))


@pytest.mark.parametrize(("overrides", "needle"), [
    (["train.outlier_exposure.dataset=mnist"], "is the training set itself"),
    (["train.outlier_exposure.dataset=imagefolder"], "needs train.outlier_exposure.path"),
    (["train.outlier_exposure.dataset=noise", "train.adversarial.method=fgsm"], "not supported together"),
    (["train.outlier_exposure.dataset=nosie"], "(did you mean 'noise'?)"),
    (["train.outlier_exposure.weight=-1"], "must be >= 0"),
])
def test_config_mistakes_are_one_clear_error(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("cnn_mnist", overrides)
    assert needle in str(info.value)


@needs_mnist
def test_a_tiny_oe_run_trains_and_tests(tmp_path: Path) -> None:
    cfg = load_config("mnist_mlp", [*QUICK, "train.epochs=1", "train.outlier_exposure.dataset=noise"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLA_OFFLINE", "1")
        run = run_experiment(cfg, tmp_path / "oe", DATA_ROOT)
    assert run.results.is_file()


def test_the_auxiliary_pass_leaves_batchnorm_statistics_to_the_id_data() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 4 * 4, 4)).train()
    aux = torch.full((20, 1, 6, 6), 255, dtype=torch.uint8)  # outliers far from the ID statistics
    crit = OutlierExposure(model, aux, weight=1.0, batch_size=8, label_smoothing=0.0)
    x, y = torch.rand(5, 1, 6, 6), torch.randint(0, 4, (5,))
    logits = model(x)  # the loop's ID forward pass: this one updates the running statistics
    stats = {k: v.clone() for k, v in model[1].state_dict().items()}
    crit(logits, y, x, torch.arange(5)).backward()
    assert all(torch.equal(v, stats[k]) for k, v in model[1].state_dict().items())  # the outliers changed nothing
    assert model.training and model[1].training  # modes restored
    # ...and the outliers were normalised with the running statistics, as at test time.
    logits = model(x)
    torch.manual_seed(3)
    loss = crit(logits, y, x, torch.arange(5))
    torch.manual_seed(3)
    idx = torch.randint(0, 20, (8,))
    with torch.no_grad():
        aux_logits = model.eval()(aux[idx].float() / 255)
    model.train()
    expected = F.cross_entropy(logits, y) + uniform_cross_entropy(aux_logits)
    torch.testing.assert_close(loss.detach(), expected)


def test_fgsm_source_perturbs_the_id_batch_by_eps_and_is_the_loss_on_those() -> None:
    from dla.attacks import fgsm

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(8, 1, 4, 4) * 0.5 + 0.25  # away from 0 and 1: no pixel is clamped at eps = 0.2
    y = torch.randint(0, 3, (8,))
    crit = OutlierExposure(model, None, weight=0.7, batch_size=5, label_smoothing=0.0, fgsm_eps=0.2)
    x_aux = crit.aux_batch(x, y)
    assert x_aux.shape == (5, 1, 4, 4)
    # A linear model's input gradient is nowhere zero: every pixel moves by exactly eps.
    torch.testing.assert_close((x_aux - x[:5]).abs(), torch.full((5, 1, 4, 4), 0.2))
    torch.testing.assert_close(x_aux, fgsm(model, x[:5], y[:5], 0.2))
    loss = crit(model(x), y, x, torch.arange(8))
    expected = F.cross_entropy(model(x), y) + 0.7 * uniform_cross_entropy(model(x_aux))
    torch.testing.assert_close(loss, expected)
    assert torch.equal(x, x.clone()) and model.training
    with pytest.raises(ValueError, match="either an auxiliary image tensor or fgsm_eps > 0"):
        OutlierExposure(model, None, weight=0.7, batch_size=5, label_smoothing=0.0)


@needs_mnist
def test_a_tiny_fgsm_oe_run_trains_and_tests(tmp_path: Path) -> None:
    cfg = load_config("mnist_mlp", [*QUICK, "train.epochs=1", "train.outlier_exposure.dataset=fgsm",
                                    "train.outlier_exposure.eps=0.25", "train.outlier_exposure.batch_size=32"])
    splits = load_splits(cfg.data, DATA_ROOT, cfg.seed)
    crit = build_criterion(cfg, splits, torch.device("cpu"), nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))
    assert isinstance(crit, OutlierExposure) and crit.aux is None and crit.fgsm_eps == 0.25
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLA_OFFLINE", "1")
        run = run_experiment(cfg, tmp_path / "oe", DATA_ROOT)
    import json

    results = json.loads(run.results.read_text())
    assert results["test"]["accuracy"] > 0.5  # it learned despite the outlier term
    with pytest.raises(ConfigError, match="must be > 0"):
        load_config("cnn_mnist", ["train.outlier_exposure.dataset=fgsm", "train.outlier_exposure.eps=0"])


def test_batch_mode_normalises_outliers_with_their_own_statistics_and_keeps_the_running_ones() -> None:
    import copy

    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 4 * 4, 4)).train()
    aux = torch.randint(200, 256, (20, 1, 6, 6), dtype=torch.uint8)  # far from the ID statistics
    crit = OutlierExposure(model, aux, weight=1.0, batch_size=8, label_smoothing=0.0, batchnorm="batch")
    x, y = torch.rand(5, 1, 6, 6), torch.randint(0, 4, (5,))
    logits = model(x)
    stats = {k: v.clone() for k, v in model[1].state_dict().items()}  # incl. num_batches_tracked
    reference = copy.deepcopy(model)  # train mode: the batch's own statistics
    torch.manual_seed(3)
    loss = crit(logits, y, x, torch.arange(5))
    assert all(torch.equal(v, stats[k]) for k, v in model[1].state_dict().items())  # running statistics untouched
    assert model[1].training and model[1].track_running_stats  # flags restored
    torch.manual_seed(3)
    idx = torch.randint(0, 20, (8,))
    expected = F.cross_entropy(logits, y) + uniform_cross_entropy(reference(aux[idx].float() / 255))
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ConfigError, match="batchnorm"):
        load_config("cnn_mnist", ["train.outlier_exposure.batchnorm=running"])
