"""The CIFAR-10 experiments resolve and train a step on a tiny JPEG archive (the pickles absent: data.fallback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dla.config import load_config
from dla.tasks import run_experiment
from dla.train.restore import load_trained

from ..data.test_cifar_jpeg import build_archive, pin

TINY = ["data.val_size=10", "data.batch_size=8", "data.eval_batch_size=16", "data.limit_train=0",
        "train.epochs=1", "tracking.progress=off", "tracking.tensorboard=false", "train.amp_cpu=false"]


@pytest.fixture
def tiny_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "root"
    build_archive(root / "cifar10_jpeg" / "cifar10-jpeg.tar.gz")
    pin(monkeypatch, root / "cifar10_jpeg" / "cifar10-jpeg.tar.gz")
    monkeypatch.setenv("DLA_CACHE", str(tmp_path / "cache"))
    return root


@pytest.mark.parametrize(("experiment", "extra"), [
    ("cifar10_fast", []),
    ("cnn_cifar10", []),
    ("cnn_depth_cifar10", ["model.depth=9"]),
    ("resnet20_cifar10", []),
    ("vit_cifar10", ["model.depth=1", "model.dim=32", "model.heads=2"]),
])
def test_runs_on_the_jpeg_copy_and_says_so(experiment: str, extra: list[str], tiny_root: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    run = run_experiment(load_config(experiment, [*TINY, *extra]), tmp_path / "runs", tiny_root)
    assert "data.fallback: using cifar10_jpeg" in capsys.readouterr().out
    results = json.loads((run.path / "results.json").read_text())
    assert results["dataset"] == "cifar10_jpeg"
    assert results["data"] == {"name": "cifar10_jpeg", "source": "CIFAR-10, JPEG copy (re-encoded, lossy; not the "
                               "pickled benchmark's pixels)", "train": 20, "val": 10, "test": 20,
                               "limit_train": 0, "limit_test": 0}
    assert "JPEG copy" in (run.path / "summary.md").read_text()
    assert "name: cifar10_jpeg" in (run.path / "config.yaml").read_text()  # what `dla ood` / `attack` rebuild


def test_test_flip_averages_the_mirror_logits(tiny_root: Path, tmp_path: Path) -> None:
    run = run_experiment(load_config("cifar10_fast", TINY), tmp_path / "runs", tiny_root)
    trained = load_trained(run.path, tiny_root)
    model, test = trained.model.eval(), trained.splits.test
    with torch.no_grad():
        x = test.x.float() / 255
        logits = (model(x) + model(x.flip(-1))) / 2
    accuracy = (logits.argmax(1) == test.y).float().mean().item()
    got = json.loads((run.path / "results.json").read_text())["test"]["accuracy"]
    assert got == pytest.approx(accuracy, abs=1e-6)


def test_the_distillation_sweep_finds_a_teacher_that_fell_back_too(tiny_root: Path, tmp_path: Path) -> None:
    # The teacher's config records the dataset it really used (cifar10_jpeg); the student's still says cifar10
    # (with its fallback) until its data is loaded. Both are the JPEG copy, so distillation must go ahead.
    from dla.sweep import run_sweep

    sweep = run_sweep("distill_cifar10", [*TINY, "variant=teacher,distilled", "seed=0"], tmp_path / "runs",
                      tiny_root, "tiny", progress_mode="off")
    student = json.loads((sweep / "variant=distilled,seed=0" / "results.json").read_text())
    assert student["dataset"] == "cifar10_jpeg"
    assert "variant=teacher,seed=0" in (sweep / "variant=distilled,seed=0" / "config.yaml").read_text()
