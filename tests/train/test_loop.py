"""The training loop end to end on real MNIST digits: run folder, results, exact resume, checkpoints."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from dla.config import load_config
from dla.data import load_splits
from dla.errors import CheckpointError, DlaError
from dla.models import ModelInputs, build_model
from dla.train import Trainer, run_experiment
from dla.train.checkpoint import load_checkpoint, save_checkpoint
from dla.train.loop import TrainingDiverged

from ..conftest import QUICK, PickleBomb, needs_mnist

pytestmark = needs_mnist


def _run(tmp_path: Path, data_root: Path, *extra: str):
    cfg = load_config("mnist_mlp", [*QUICK, *extra])
    return run_experiment(cfg, tmp_path / "runs" / cfg.experiment, data_root)


def _rows(run) -> list[dict[str, str]]:
    with open(run.metrics, newline="") as f:
        return [{k: v for k, v in r.items() if k != "time"} for r in csv.DictReader(f)]


def test_run_folder_is_complete_and_results_match_an_independent_evaluation(tmp_path: Path, data_root: Path):
    run = _run(tmp_path, data_root, "run_name=a")
    for rel in ["config.yaml", "env.json", "metrics.csv", "results.json", "summary.md", "checkpoints/best.pt",
                "checkpoints/last.pt", "plots/curves.png", "plots/confusion_test.png"]:
        assert (run.path / rel).is_file(), rel
    assert list((run.path / "tb").glob("events.out.tfevents.*"))
    rows = _rows(run)
    assert [(r["epoch"], r["split"]) for r in rows] == [(str(e), s) for e in (1, 2, 3) for s in ("train", "val")]
    env = json.loads(run.env.read_text())
    assert env["torch"] == torch.__version__ and env["seed"] == 0

    # Re-evaluate the best checkpoint ourselves and compare with scikit-learn on the same test digits.
    results = run.read_results()
    cfg = load_config("mnist_mlp", QUICK)
    splits = load_splits(cfg.data, data_root, cfg.seed)
    model = build_model(cfg.model, ModelInputs(splits.input_shape, 10, splits.mean, splits.std))
    model.load_state_dict(load_checkpoint(run.best)["model"])
    model.eval()
    with torch.no_grad():
        logits = model(splits.test.x.float() / 255)
    y, p = splits.test.y.numpy(), logits.argmax(1).numpy()
    test = results["test"]
    assert test["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert test["precision"] == pytest.approx(skm.precision_score(y, p, average="macro", zero_division=0))
    assert test["recall"] == pytest.approx(skm.recall_score(y, p, average="macro", zero_division=0))
    assert test["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, splits.test.y)), rel=1e-5)
    np.testing.assert_array_equal(np.array(results["confusion_matrix"]), skm.confusion_matrix(y, p))
    assert test["accuracy"] > 0.8  # 2,000 digits, 3 epochs: a working loop learns
    assert results["best_epoch"] == max(range(1, 4), key=lambda e: float(rows[2 * e - 1]["accuracy"]))


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path: Path, data_root: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    extra = ["train.epochs=4", "train.early_stopping.patience=0", "data.augment.crop_padding=2",
             "data.augment.flip=true"]  # augmentation and dropout draw random numbers: resume must replay them
    straight = _run(tmp_path, data_root, "run_name=straight", *extra)

    original = Trainer.train_one_epoch

    def interrupt_in_epoch_3(self, epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_one_epoch", interrupt_in_epoch_3)
    with pytest.raises(DlaError, match=r"interrupted; .* resume=true run_name=cut"):
        _run(tmp_path, data_root, "run_name=cut", *extra)
    cut_dir = straight.path.parent / "cut"
    assert not (cut_dir / "results.json").exists()
    assert load_checkpoint(cut_dir / "checkpoints" / "last.pt")["epoch"] == 2
    monkeypatch.setattr(Trainer, "train_one_epoch", original)

    resumed = _run(tmp_path, data_root, "run_name=cut", "resume=true", *extra)
    assert _rows(resumed) == _rows(straight)
    assert resumed.read_results()["test"] == straight.read_results()["test"]
    a, b = load_checkpoint(straight.last)["model"], load_checkpoint(resumed.last)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_changed_config(tmp_path: Path, data_root: Path):
    _run(tmp_path, data_root, "run_name=r", "train.epochs=1").results.unlink()  # as if interrupted
    with pytest.raises(DlaError, match=r"config differs .* in model"):
        _run(tmp_path, data_root, "run_name=r", "train.epochs=1", "resume=true", "model.width=32")


def test_resume_accepts_a_run_saved_before_new_keys_existed(tmp_path: Path, data_root: Path):
    import yaml

    run = _run(tmp_path, data_root, "run_name=old", "train.epochs=1")
    run.results.unlink()  # as if interrupted
    saved = yaml.safe_load(run.config.read_text())
    del saved["distill"], saved["train"]["grad_flow_every"]  # keys a later dla added, at their defaults
    run.config.write_text(yaml.safe_dump(saved))
    assert _run(tmp_path, data_root, "run_name=old", "train.epochs=1", "resume=true").complete
    run.results.unlink()
    with pytest.raises(DlaError, match=r"config differs .* in train"):  # a new key away from its default is a change
        _run(tmp_path, data_root, "run_name=old", "train.epochs=1", "resume=true", "train.grad_flow_every=5")


def test_existing_run_folder_is_not_overwritten(tmp_path: Path, data_root: Path):
    _run(tmp_path, data_root, "run_name=same", "train.epochs=1")
    with pytest.raises(DlaError, match="already exists"):
        _run(tmp_path, data_root, "run_name=same", "train.epochs=1")


def test_early_stopping_stops_when_nothing_improves(tmp_path: Path, data_root: Path):
    run = _run(tmp_path, data_root, "optim.lr=1e-12", "model.dropout=0", "model.norm=none", "train.epochs=10",
               "train.early_stopping.patience=2")
    res = run.read_results()
    assert res["best_epoch"] == 1 and res["epochs_run"] == 3


def test_divergence_stops_with_the_epoch_named(tmp_path: Path, data_root: Path):
    with pytest.raises(TrainingDiverged, match="in epoch 1"):
        _run(tmp_path, data_root, "optim.lr=1e30", "optim.name=sgd", "model.norm=none")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_payload_checkpoint_is_refused_and_never_runs(tmp_path: Path):
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "dla-checkpoint", "version": 1, "model": PickleBomb(marker)}, evil)
    with pytest.raises(CheckpointError, match=r"refused checkpoint .* may run code"):
        load_checkpoint(evil)
    assert not marker.exists()
    raw = tmp_path / "raw.pkl"  # not even a torch zip: a bare pickle stream
    raw.write_bytes(pickle.dumps(PickleBomb(marker)))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_truncated_and_foreign_checkpoints_are_named(tmp_path: Path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"epoch": 1, "model": {"w": torch.ones(1000)}})
    assert load_checkpoint(good)["epoch"] == 1
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, foreign)
    with pytest.raises(CheckpointError, match="not a dla checkpoint"):
        load_checkpoint(foreign)


def test_any_garbage_file_is_a_checkpoint_error_not_a_traceback(tmp_path: Path):
    import random

    rng = random.Random(0)
    path = tmp_path / "garbage.pt"
    blobs = [b"", b"\x80", b"PK\x03\x04" + bytes(40), *(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
                                                     for _ in range(60))]
    for blob in blobs:
        path.write_bytes(blob)
        with pytest.raises(CheckpointError):
            load_checkpoint(path)


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"epoch": 1})

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind


def test_resuming_a_run_that_stopped_early_trains_no_further(tmp_path: Path, data_root: Path):
    extra = ["optim.lr=1e-12", "model.dropout=0", "model.norm=none", "train.epochs=10",
             "train.early_stopping.patience=2", "run_name=es"]
    run = _run(tmp_path, data_root, *extra)
    before = _rows(run)
    run.results.unlink()  # as if it had died while writing its plots
    stale = run.checkpoints / ".last.pt.k9x2.tmp"  # what kill -9 during a checkpoint write leaves
    stale.write_bytes(b"half a checkpoint")
    again = _run(tmp_path, data_root, *extra, "resume=true")
    assert not stale.exists()
    assert _rows(again) == before and again.read_results()["epochs_run"] == 3


def test_resume_refuses_a_finished_run(tmp_path: Path, data_root: Path):
    _run(tmp_path, data_root, "run_name=done", "train.epochs=1")
    with pytest.raises(DlaError, match="already finished"):
        _run(tmp_path, data_root, "run_name=done", "train.epochs=1", "resume=true")


def test_a_full_disk_mid_run_is_one_clear_error_and_the_last_checkpoint_survives(
        tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch):
    import errno

    import dla.train.engine as engine

    real_save = engine.save_checkpoint  # every loop writes its checkpoints through the engine

    def save_until_disk_fills(path, state):
        if state["epoch"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(path, state)

    monkeypatch.setattr(engine, "save_checkpoint", save_until_disk_fills)
    with pytest.raises(DlaError, match=r"No space left on device; the last complete checkpoint is .*epoch 1") as e:
        _run(tmp_path, data_root, "run_name=full")
    assert "\n" not in str(e.value)
    run_dir = tmp_path / "runs" / "mnist_mlp" / "full"
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 1
    assert not (run_dir / "results.json").exists()
