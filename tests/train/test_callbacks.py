"""Callbacks: the hooks each loop calls, in order and with the step numbers the docstring of dla.train.callbacks
promises; a stop_reason ends training; the same GradFlow callback serves the image and the language-model loop."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from dla.config import load_config
from dla.tasks import run_experiment
from dla.train import loop
from dla.train.callbacks import Callback

from ..conftest import DATA_ROOT, QUICK, needs_data, needs_mnist

STEPS = (2000 - 500) // 100  # QUICK: 2,000 images less 500 for validation, in batches of 100


class Recorder(Callback):
    def __init__(self, stop_after: int = 0) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.stop_after = stop_after

    def on_start(self, engine, at, steps_done):
        self.calls.append(("on_start", at, steps_done))

    def on_epoch_start(self, engine, epoch):
        self.calls.append(("on_epoch_start", epoch))

    def on_loss(self, engine, step, loss):
        self.calls.append(("on_loss", step))

    def before_update(self, engine, step, epoch):
        self.calls.append(("before_update", step, epoch))

    def after_update(self, engine, step):
        self.calls.append(("after_update", step))

    def on_epoch_end(self, engine, epoch):
        self.calls.append(("on_epoch_end", epoch))

    def on_validate(self, engine, epoch, val):
        val["robust_accuracy"] = 0.5  # a callback may add a validation metric: it is logged with the others
        self.calls.append(("on_validate", epoch))

    def stop_reason(self, engine, epoch):
        return f"recorder stops after epoch {epoch}" if epoch == self.stop_after else None


@needs_mnist
def test_the_image_loop_calls_every_hook_in_order_and_a_stop_reason_ends_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    rec = Recorder(stop_after=2)
    monkeypatch.setattr(loop, "default_callbacks", lambda trainer: [loop.DivergenceWatch(), rec])
    cfg = load_config("mnist_mlp", [*QUICK, "tracking.tensorboard=false", "tracking.progress=off"])
    run = run_experiment(cfg, tmp_path / "mnist_mlp", DATA_ROOT)
    out = capsys.readouterr().out
    assert "recorder stops after epoch 2" in out and "robust 50.00%" in out  # the added metric is reported
    per_step = [("on_loss", 1), ("before_update", 1, 1), ("after_update", 1), ("on_loss", 2)]
    assert rec.calls[:6] == [("on_start", 0, 0), ("on_epoch_start", 1), *per_step]
    i = rec.calls.index(("on_epoch_end", 1))
    assert rec.calls[i - 1] == ("after_update", STEPS) and rec.calls[i + 1:i + 4] == [
        ("on_validate", 1), ("on_epoch_start", 2), ("on_loss", STEPS + 1)]
    assert rec.calls[-1] == ("on_validate", 2)  # then stopped: no third epoch
    res = json.loads(run.results.read_text())
    assert res["epochs_run"] == 2


@needs_data("dante_inferno")
def test_the_language_model_loop_records_gradient_flow_with_the_same_callback(tmp_path: Path) -> None:
    over = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "lm.block_size=16", "data.batch_size=8",
            "lm.max_iters=20", "lm.eval_interval=10", "lm.eval_iters=2", "lm.warmup_iters=2", "lm.sample_tokens=0",
            "tracking.tensorboard=false", "tracking.progress=off", "train.grad_flow_every=5"]
    run = run_experiment(load_config("dante_char", over), tmp_path / "dante_char", DATA_ROOT)
    with run.gradflow.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted({int(r["step"]) for r in rows}) == [5, 10, 15, 20]
    names = {r["name"] for r in rows}
    assert any("attn" in n for n in names) and all(float(r["grad_norm"]) > 0 for r in rows)
    assert (run.plots / "gradflow_layers.png").is_file()
