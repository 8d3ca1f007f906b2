"""Load: `dla sweep --jobs N` with many small points in parallel finishes every point exactly once.

Each point is its own worker process; the sweep's output names every worker it starts, each worker's log holds
the banner every run prints once when it starts, and each run folder holds one row per epoch and split. A
point started twice, lost, or run into another point's folder would show in one of these counts.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from pathlib import Path

import pytest

from .conftest import dla

SEEDS = list(range(8))  # two waves of --jobs 4
# Small points: seeded noise images (no dataset file to read), a tiny MLP, one epoch.
POINT = ["data.name=noise", "data.image_size=8", "data.channels=1", "data.limit_train=300", "data.val_size=100",
         "data.limit_test=100", "data.batch_size=100", "data.augment.crop_padding=0", "model.width=16",
         "train.epochs=2", "tracking.progress=off", "tracking.tensorboard=false"]


def _sweep_has_jobs() -> bool:
    from dla.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(["sweep", "--help"])
    return "--jobs" in out.getvalue()


@pytest.mark.slow
@pytest.mark.skipif(not _sweep_has_jobs(), reason="`dla sweep --jobs` is not in this version yet")
def test_a_parallel_sweep_runs_every_point_exactly_once(tmp_path: Path, proof) -> None:
    out = tmp_path / "runs"
    done = dla(["sweep", "mnist_mlp", f"seed={','.join(map(str, SEEDS))}", *POINT, "--jobs", "4", "--name", "load",
                "--out", str(out)], tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    sweep = out / "mnist_mlp" / "load"
    names = [f"seed={s}" for s in SEEDS]
    with proof.check("load"):  # every point started once, by one worker
        started = re.findall(r"^-> (\S+) \(process \d+", done.stdout, flags=re.M)
        assert sorted(started) == sorted(names), done.stdout
    with proof.check("load"):  # every point reported finished once, and done
        finished = re.findall(r"^\s*\d+/8\s+(\S+)\s+(\S+)", done.stdout, flags=re.M)
        assert sorted(finished) == sorted((n, "done") for n in names), done.stdout
    with proof.check("load"):  # the summary agrees
        with open(sweep / "sweep.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert sorted(r["run"] for r in rows) == sorted(names) and {r["status"] for r in rows} == {"done"}
    with proof.check("load"):  # nothing but the 8 run folders (plus logs and plots) in the sweep folder
        assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == sorted([*names, "logs", "plots"])
    for seed, name in zip(SEEDS, names, strict=True):
        run = sweep / name
        with proof.check("load"):  # each run once: one start banner, one row per epoch and split, its own seed
            log = (sweep / "logs" / f"{name}.log").read_text()
            assert log.count(f", run {run}\n") == 1, log
            with open(run / "metrics.csv", newline="") as f:
                assert [(r["epoch"], r["split"]) for r in csv.DictReader(f)] == [
                    ("1", "train"), ("1", "val"), ("2", "train"), ("2", "val")]
            results = json.loads((run / "results.json").read_text())
            env = json.loads((run / "env.json").read_text())
            assert results["seed"] == env["seed"] == seed and results["run"] == name
            assert results["epochs_run"] == 2 and 0 <= results["test"]["accuracy"] <= 1
            assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert list(sweep.rglob(".*.tmp")) == []
