"""Numerical faults: a NaN or inf loss stops the run at that step, names it and the last good checkpoint,
and nothing computed from it is ever saved."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import dla.train.loop as loop
from dla.train.checkpoint import load_checkpoint
from dla.train.loop import LossWatch

from ..conftest import needs_mnist, one_line_error, run_cli
from .conftest import RUN, metric_rows

pytestmark = needs_mnist

STEPS_PER_EPOCH = 40  # RUN: 4,500 training digits - 500 for validation, batches of 100
BAD_STEP = 45  # epoch 2, batch 5


def _poison(monkeypatch: pytest.MonkeyPatch, value: float, at_step: int = BAD_STEP) -> None:
    """The training objective returns `value` once, at global step `at_step` (a transient fault)."""
    real = loop.build_criterion

    def build(*args, **kwargs):
        criterion = real(*args, **kwargs)
        calls = [0]

        def poisoned(logits, y, x, idx):
            calls[0] += 1
            loss = criterion(logits, y, x, idx)
            return loss * value if calls[0] == at_step else loss

        return poisoned

    monkeypatch.setattr(loop, "build_criterion", build)


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_a_non_finite_loss_stops_at_its_step_and_names_the_last_good_checkpoint(
        tmp_path: Path, proof, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        value: float) -> None:
    _poison(monkeypatch, value)
    run_dir = tmp_path / "mnist_mlp" / "bad"
    with proof.check("numerical"):
        line = one_line_error(capsys, ["run", "mnist_mlp", *RUN, "run_name=bad", "--out", str(tmp_path)],
                              f"training loss became {value} at step {BAD_STEP} in epoch 2 (batch 5 of "
                              f"{STEPS_PER_EPOCH}); stopped before anything trained on it was saved",
                              f"the last good checkpoint is {run_dir / 'checkpoints' / 'last.pt'} (epoch 1; "
                              "resume=true run_name=bad continues it)")
        assert "lower optim.lr or set train.grad_clip" in line
        last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        assert last["epoch"] == 1 and load_checkpoint(run_dir / "checkpoints" / "best.pt")["epoch"] == 1
        assert all(torch.isfinite(t).all() for t in last["model"].values())  # garbage never reached the disk
        assert {r["epoch"] for r in metric_rows(run_dir)} == {"1"}  # nor the metrics
        assert not (run_dir / "results.json").exists()
    if value is math.nan:  # the fault was transient: resuming from the named checkpoint finishes the run
        monkeypatch.undo()
        with proof.check("numerical"):
            code, stdout, err = run_cli(capsys, "run", "mnist_mlp", *RUN, "run_name=bad", "resume=true",
                                        "--out", str(tmp_path))
            assert code == 0, err
            assert f"resuming {run_dir} after epoch 1" in stdout and (run_dir / "results.json").is_file()


def test_a_divergent_learning_rate_stops_in_the_first_epoch_with_no_checkpoint(
        tmp_path: Path, proof, capsys: pytest.CaptureFixture[str]) -> None:
    with proof.check("numerical"):  # a real divergence, nothing patched
        line = one_line_error(capsys, ["run", "mnist_mlp", *RUN, "optim.name=sgd", "optim.lr=1e30", "model.norm=none",
                                       "run_name=div", "--out", str(tmp_path)],
                              "in epoch 1 (batch", "the last good checkpoint is none (no epoch finished)")
        step = int(line.split(" at step ")[1].split()[0])
        assert 1 <= step <= STEPS_PER_EPOCH
        assert list((tmp_path / "mnist_mlp" / "div").glob("checkpoints/*")) == []


def test_on_an_accelerator_the_window_check_still_names_the_first_bad_step(
        tmp_path: Path, proof, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # On CUDA the losses are read back once per window of 32 steps, not every step: the run must still stop
    # before the epoch is saved and name the exact step. Simulated on the CPU with a window of 16.
    losses = [1.0, 2.0, 0.5, 0.7, 0.3, math.inf, math.nan, 0.2, 0.1]
    with proof.check("numerical"):
        watch = LossWatch(torch.device("cpu"), every=4)
        checks = []
        for step, v in enumerate(losses, 1):
            if watch.add(step, torch.tensor(v)):
                checks.append(watch.first_bad(lambda t: t))
        checks.append(watch.first_bad(lambda t: t))  # the epoch's end flushes the rest
        assert checks == [None, (6, math.inf), None]
    _poison(monkeypatch, math.nan)
    monkeypatch.setattr(loop, "LossWatch", lambda device: LossWatch(device, every=16))
    with proof.check("numerical"):
        one_line_error(capsys, ["run", "mnist_mlp", *RUN, "run_name=win", "--out", str(tmp_path)],
                       f"became nan at step {BAD_STEP} in epoch 2")
        assert load_checkpoint(tmp_path / "mnist_mlp" / "win" / "checkpoints" / "last.pt")["epoch"] == 1
