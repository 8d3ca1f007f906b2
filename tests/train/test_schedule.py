"""Learning-rate schedules and early stopping: the numbers at their defining points."""

from __future__ import annotations

import math

import pytest
import torch

from dla.config import EarlyStoppingConfig, ScheduleConfig
from dla.train.early_stopping import EarlyStopping
from dla.train.optim import build_optimizer, build_scheduler, lr_factor, param_groups


def test_warmup_then_cosine_reaches_the_floor() -> None:
    cfg = ScheduleConfig(name="cosine", warmup_epochs=1, min_lr_ratio=0.1)
    steps, epochs = 10, 5
    assert lr_factor(0, cfg, steps, epochs) == pytest.approx(0.1)  # first warmup step: 1/10
    assert lr_factor(9, cfg, steps, epochs) == pytest.approx(1.0)  # warmup done
    assert lr_factor(10, cfg, steps, epochs) == pytest.approx(1.0)  # cosine starts at the peak
    mid = 10 + 20  # half-way through the 40 cosine steps
    assert lr_factor(mid, cfg, steps, epochs) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(50, cfg, steps, epochs) == pytest.approx(0.1)


def test_step_and_constant_and_onecycle() -> None:
    step = ScheduleConfig(name="step", step_epochs=2, gamma=0.5)
    assert [lr_factor(s, step, 10, 6) for s in (0, 19, 20, 40)] == [1.0, 1.0, 0.5, 0.25]
    assert lr_factor(123, ScheduleConfig(name="constant"), 10, 20) == 1.0
    one = ScheduleConfig(name="onecycle")
    peak = max(range(100), key=lambda s: lr_factor(s, one, 10, 10))
    assert 25 <= peak <= 30  # 30% ramp
    assert lr_factor(99, one, 10, 10) == pytest.approx(0.0, abs=1e-3)


def test_scheduler_drives_the_optimizer() -> None:
    model = torch.nn.Linear(3, 2)
    from dla.config import OptimConfig

    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.2, weight_decay=0.1))
    sched = build_scheduler(opt, ScheduleConfig(name="cosine"), steps_per_epoch=4, epochs=2)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.2)
    assert lrs[4] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))


def test_weight_decay_skips_biases() -> None:
    groups = param_groups(torch.nn.Linear(3, 2), 0.5)
    assert [p.ndim for p in groups[0]["params"]] == [2] and groups[0]["weight_decay"] == 0.5
    assert [p.ndim for p in groups[1]["params"]] == [1] and groups[1]["weight_decay"] == 0.0


def test_early_stopping_patience_and_mode() -> None:
    es = EarlyStopping(EarlyStoppingConfig(mode="max", patience=2, min_delta=0.01))
    assert es.step(0.5, 1)
    assert not es.step(0.505, 2)  # below min_delta
    assert not es.should_stop
    assert not es.step(0.4, 3)
    assert es.should_stop and es.best_epoch == 1
    low = EarlyStopping(EarlyStoppingConfig(mode="min", patience=0))
    assert low.step(1.0, 1) and low.step(0.5, 2) and not low.step(0.7, 3)
    assert not low.should_stop  # patience 0 never stops
    copy = EarlyStopping(es.cfg)
    copy.load_state_dict(es.state_dict())
    assert copy.state_dict() == es.state_dict()
