"""Sweeps: the grid, sweep.csv, mean ± std over seeds, and continuing an interrupted sweep."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from dla.errors import ConfigError
from dla.sweep import dependency_order, point_dependencies, point_name, run_sweep, split_args

from .conftest import QUICK, needs_mnist, one_line_error, run_cli


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


# A distilled student reads its teacher's run folder: listed first, it must still wait for the teacher (which a
# second free worker would otherwise start it beside).
DISTILL_YAML = """
description: "test: a distilled student and its teacher"
data: {name: mnist, limit_train: 1000, val_size: 200, limit_test: 200, batch_size: 100}
model: {name: mlp, width: 16, depth: 1}
train: {epochs: 1}
tracking: {progress: "off", tensorboard: false}
variants:
  distilled:
    distill.teacher: "{sweep}/variant=teacher,seed={seed}"
  teacher:
    model.width: 32
  orphan:
    distill.teacher: "{sweep}/no-such-run"
sweep:
  variant: [distilled, teacher]
  seed: [0]
"""


def _tests(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())["test"] for p in sorted(sweep.glob("*/results.json"))}


def test_point_dependencies_match_whole_run_names(tmp_path: Path) -> None:
    names = ["a,seed=1", "a,seed=10", "b,seed=1"]
    overrides = [["x=1"], [f"t={tmp_path}/a,seed=1"], [f"t={tmp_path}/a,seed=10/checkpoints/best.pt", "seed=1"]]
    deps = point_dependencies(names, overrides, tmp_path)
    assert deps == [set(), {"a,seed=1"}, {"a,seed=10"}]
    assert dependency_order(["s", "t"], [{"t"}, set()]) == [1, 0]


@needs_mnist
def test_parallel_sweep_runs_each_point_once_like_the_sequential_one(tmp_path: Path, data_root: Path) -> None:
    exp = tmp_path / "dist.yaml"
    exp.write_text(DISTILL_YAML)
    par = run_sweep(str(exp), [], tmp_path, data_root, "par", jobs=2, progress_mode="off")
    seq = run_sweep(str(exp), [], tmp_path, data_root, "seq", jobs=1, progress_mode="off")
    names = ["variant=distilled,seed=0", "variant=teacher,seed=0"]
    # Every point once: one log each, one training run in it; CPU training is deterministic, so the same numbers
    # up to float summation order (a worker gets 1 thread of 2, the in-process run both: on AVX-512 CPUs the
    # reductions then differ in the 7th digit).
    assert sorted(p.stem for p in (par / "logs").glob("*.log")) == names
    for name in names:
        assert (par / "logs" / f"{name}.log").read_text().count(f"run {par / name}") == 1
    assert sorted(_tests(par)) == names
    for name, metrics in _tests(seq).items():
        assert _tests(par)[name] == pytest.approx(metrics, rel=1e-5)
    with open(par / "sweep.csv", newline="") as f:
        assert {r["run"]: r["status"] for r in csv.DictReader(f)} == dict.fromkeys(names, "done")
    # The students were distilled from their own finished teachers: started after the teacher's results.
    student, teacher = par / names[0], par / names[1]
    assert str(teacher) in (student / "config.yaml").read_text()
    assert (student / "config.yaml").stat().st_mtime_ns > (teacher / "results.json").stat().st_mtime_ns

    # Interrupted: one point lost its results (it keeps checkpoints/last.pt). The rerun trains that one only,
    # resuming it, and the finished ones stay untouched.
    stamps = {p: p.stat().st_mtime_ns for p in par.glob("*/results.json")}
    lost = par / "variant=distilled,seed=0" / "results.json"
    before = json.loads(lost.read_text())["test"]
    lost.unlink()
    run_sweep(str(exp), [], tmp_path, data_root, "par", jobs=2, progress_mode="off")
    assert json.loads(lost.read_text())["test"] == before
    assert {p: p.stat().st_mtime_ns for p in par.glob("*/results.json") if p != lost} == \
        {p: t for p, t in stamps.items() if p != lost}
    assert "resuming" in (par / "logs" / "variant=distilled,seed=0.log").read_text()


@needs_mnist
def test_a_failed_point_does_not_stop_the_others(tmp_path: Path, data_root: Path) -> None:
    exp = tmp_path / "dist.yaml"
    exp.write_text(DISTILL_YAML)
    sweep = run_sweep(str(exp), ["variant=orphan,teacher", "seed=0"], tmp_path, data_root, "f", jobs=2,
                      progress_mode="off")
    with open(sweep / "sweep.csv", newline="") as f:
        status = {r["run"]: r["status"] for r in csv.DictReader(f)}
    assert status == {"variant=orphan,seed=0": "failed", "variant=teacher,seed=0": "done"}
    assert "Not finished (diverged, failed or missing): variant=orphan,seed=0" in (sweep / "summary.md").read_text()
    assert "no-such-run" in (sweep / "logs" / "variant=orphan,seed=0.log").read_text()


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@needs_mnist
def test_a_sweep_named_after_an_existing_run_is_refused_before_writing(capsys: pytest.CaptureFixture[str],
                                                                       tmp_path: Path, data_root: Path) -> None:
    common = [*QUICK, "train.epochs=1", "tracking.tensorboard=false", "--out", str(tmp_path), "--data-root",
              str(data_root)]
    assert run_cli(capsys, "run", "mnist_mlp", *common, "run_name=tiny")[0] == 0
    run = tmp_path / "mnist_mlp" / "tiny"
    before = _tree(run)
    line = one_line_error(capsys, ["sweep", "mnist_mlp", "seed=0,1", *common, "--name", "tiny"],
                          "sweep --name tiny", f"{run}", "the run 'tiny'", "choose another --name")
    assert "Traceback" not in line
    assert _tree(run) == before  # no seed=0/, seed=1/, sweep.csv, and its summary.md untouched


@needs_mnist
def test_a_run_named_after_an_existing_sweep_is_refused_before_writing(capsys: pytest.CaptureFixture[str],
                                                                       tmp_path: Path, data_root: Path) -> None:
    common = [*QUICK, "train.epochs=1", "tracking.tensorboard=false", "--out", str(tmp_path), "--data-root",
              str(data_root)]
    assert run_cli(capsys, "sweep", "mnist_mlp", "seed=0,1", *common, "--name", "tiny")[0] == 0
    sweep = tmp_path / "mnist_mlp" / "tiny"
    before = _tree(sweep)
    for extra in ([], ["resume=true"]):
        one_line_error(capsys, ["run", "mnist_mlp", *common, "run_name=tiny", *extra],
                       "run_name=tiny", f"{sweep}", "the sweep 'tiny'", "choose another run_name")
    assert _tree(sweep) == before
    assert run_cli(capsys, "sweep", "mnist_mlp", "seed=0,1", *common, "--name", "tiny")[0] == 0  # it still continues


def test_an_interrupted_sweep_folder_is_still_a_sweep_folder(tmp_path: Path) -> None:
    from dla.config import load_config
    from dla.errors import RunDirError
    from dla.runs import is_run_folder, is_sweep_folder, prepare_run_dir

    sweep = tmp_path / "mnist_mlp" / "s"
    (sweep / "seed=0").mkdir(parents=True)
    (sweep / "seed=0" / "config.yaml").write_text("seed: 0\n")  # its first point had only just started
    assert is_sweep_folder(sweep) and not is_run_folder(sweep)
    assert is_run_folder(sweep / "seed=0") and not is_sweep_folder(sweep / "seed=0")
    with pytest.raises(RunDirError, match="the folder of the sweep 's'"):
        prepare_run_dir(tmp_path / "mnist_mlp", load_config("mnist_mlp", ["run_name=s"]))
    assert sorted(p.name for p in sweep.iterdir()) == ["seed=0"]
    run = tmp_path / "mnist_mlp" / "r"
    (run / "checkpoints").mkdir(parents=True)  # an interrupted run, before its first epoch ended
    with pytest.raises(RunDirError, match="the folder of the run 'r'"):
        run_sweep("mnist_mlp", ["seed=0,1"], tmp_path, tmp_path, "r")
    assert [p.name for p in run.iterdir()] == ["checkpoints"]
