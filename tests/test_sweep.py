"""Sweeps: the grid, sweep.csv, mean ± std over seeds, and continuing an interrupted sweep."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest

from dla.errors import ConfigError
from dla.sweep import point_name, run_sweep, split_args

from .conftest import QUICK, needs_mnist


def test_split_args_axes_and_fixed() -> None:
    axes, fixed = split_args(["model.depth=1,2,4", "seed=0,1", "optim.lr=0.1", "x=[1,2]"])
    assert axes == {"model.depth": [1, 2, 4], "seed": [0, 1]}
    assert fixed == ["optim.lr=0.1", "x=[1,2]"]
    assert point_name({"model.depth": 4, "model.residual": True, "seed": 0}) == "depth=4,residual=true,seed=0"


def test_bad_axis_fails_before_any_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.depth"):
        run_sweep("mnist_mlp", ["model.depth=1,-1"], tmp_path, tmp_path)
    assert not (tmp_path / "mnist_mlp").exists()


@needs_mnist
def test_sweep_summary_is_mean_and_std_of_its_runs(tmp_path: Path, data_root: Path) -> None:
    args = [*QUICK, "train.epochs=1", "model.depth=1,2", "seed=0,1"]
    sweep = run_sweep("mnist_mlp", args, tmp_path, data_root, "s")
    with open(sweep / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["depth=1,seed=0", "depth=1,seed=1", "depth=2,seed=0", "depth=2,seed=1"]
    assert all(r["status"] == "done" for r in rows)
    summary = (sweep / "summary.md").read_text()
    for depth in ("1", "2"):
        accs = [float(r["accuracy"]) for r in rows if r["model.depth"] == depth]
        mean, std = statistics.fmean(accs), statistics.stdev(accs)
        assert f"| depth={depth} |" in summary
        assert f"{100 * mean:.2f} ± {100 * std:.2f}%" in summary
    assert (sweep / "plots" / "val_accuracy.png").is_file() and (sweep / "plots" / "train_loss.png").is_file()

    # Running the same sweep again skips every finished point.
    stamps = {p: p.stat().st_mtime_ns for p in sweep.glob("*/results.json")}
    run_sweep("mnist_mlp", args, tmp_path, data_root, "s")
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("*/results.json")} == stamps
