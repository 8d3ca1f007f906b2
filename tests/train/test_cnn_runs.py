"""The CNN experiments end to end: CIFAR-10's path on stand-in files in the real batch format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dla.config import load_config
from dla.sweep import run_sweep
from dla.train import run_experiment

from ..data.conftest import set_checksums  # noqa: F401  (fixture)
from ..data.test_datasets import write_cifar10

TINY = ["model.width=4", "train.epochs=2", "data.val_size=15", "data.batch_size=10", "data.eval_batch_size=50",
        "tracking.progress=off", "tracking.tensorboard=false", "train.amp_cpu=false"]


@pytest.fixture
def cifar_root(tmp_path: Path, set_checksums) -> Path:  # noqa: F811
    root = tmp_path / "data"
    write_cifar10(root, n=9)  # 5 x 9 training images and 10 test images, in CIFAR-10's own pickle format
    set_checksums("cifar10", root)
    return root


def test_the_cifar10_depth_experiment_runs_end_to_end(tmp_path: Path, cifar_root: Path) -> None:
    cfg = load_config("cnn_depth_cifar10", [*TINY, "model.depth=17", "model.residual=true"])
    run = run_experiment(cfg, tmp_path / "runs", cifar_root)
    res = json.loads(run.results.read_text())
    assert res["dataset"] == "cifar10" and res["model"] == "cnn" and res["epochs_run"] == 2
    assert sum(map(sum, res["confusion_matrix"])) == 10  # every test image counted once
    assert (run.plots / "curves.png").is_file()


def test_the_cifar_resnet20_experiment_runs_and_a_depth_sweep_summarises(tmp_path: Path, cifar_root: Path) -> None:
    run = run_experiment(load_config("resnet20_cifar10", TINY[1:]), tmp_path / "runs", cifar_root)
    assert json.loads(run.results.read_text())["parameters"] == 269_722  # He et al.: 0.27M
    sweep = run_sweep("cnn_depth_cifar10", [*TINY, "train.epochs=1", "model.depth=9,17", "seed=0,1"],
                      tmp_path / "runs", cifar_root, "s")
    table = (sweep / "summary.md").read_text()
    for label in ("depth=9,residual=false", "depth=17,residual=true"):
        assert f"| {label} |" in table
    assert (sweep / "plots" / "val_accuracy.png").is_file()


def test_the_cifar10_distill_sweep_distils_each_seed_from_its_own_teacher(tmp_path: Path, cifar_root: Path) -> None:
    sweep = run_sweep("distill_cifar10", [*TINY, "train.epochs=1", "seed=0,1"], tmp_path / "runs", cifar_root, "s")
    table = (sweep / "summary.md").read_text()
    for v in ("teacher", "student", "distilled"):
        assert f"| variant={v} |" in table
    for seed in (0, 1):
        saved = load_config(str(sweep / f"variant=distilled,seed={seed}" / "config.yaml"))
        assert saved.data.name == "cifar10" and saved.distill.teacher == str(sweep / f"variant=teacher,seed={seed}")
    params = {v: json.loads((sweep / f"variant={v},seed=0" / "results.json").read_text())["parameters"]
              for v in ("teacher", "student", "distilled")}
    assert params["student"] == params["distilled"] < params["teacher"]
