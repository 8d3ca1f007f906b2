"""`dla sweep --launcher submitit`: each point a submitit job (its local executor here), the dependency wait and
resume as with --jobs, the same numbers as the in-process sweep; bad options are one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dla.errors import ConfigError
from dla.sweep import run_sweep
from dla.sweep_submitit import make_executor, parse_options

from .conftest import needs_mnist, run_cli
from .test_sweep import DISTILL_YAML

submitit = pytest.importorskip("submitit")
LOCAL = {"cluster": "local", "timeout_min": 10}


def _tests(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())["test"] for p in sorted(sweep.glob("*/results.json"))}


def test_options_are_key_value_with_ints() -> None:
    assert parse_options(["cluster=local", "timeout_min=30", "slurm_partition=gpu"]) == \
        {"cluster": "local", "timeout_min": 30, "slurm_partition": "gpu"}
    with pytest.raises(ConfigError, match="--submitit takes KEY=VALUE"):
        parse_options(["timeout_min"])
    with pytest.raises(ConfigError, match="--submitit takes KEY=VALUE"):
        parse_options(["a.b=1"])


def test_an_unknown_executor_parameter_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--submitit: .*no_such_option"):
        make_executor(tmp_path, {"cluster": "local", "no_such_option": 1})


@needs_mnist
def test_a_submitit_sweep_waits_for_the_teacher_and_matches_the_in_process_one(tmp_path: Path,
                                                                              data_root: Path) -> None:
    exp = tmp_path / "dist.yaml"
    exp.write_text(DISTILL_YAML)
    sub = run_sweep(str(exp), [], tmp_path, data_root, "sub", progress_mode="off", submitit=LOCAL)
    seq = run_sweep(str(exp), [], tmp_path, data_root, "seq", progress_mode="off")
    names = ["variant=distilled,seed=0", "variant=teacher,seed=0"]
    assert sorted(_tests(sub)) == names
    for name, metrics in _tests(seq).items():  # a job's process may use other threads: float summation order
        assert _tests(sub)[name] == pytest.approx(metrics, rel=1e-5)
    with open(sub / "sweep.csv", newline="") as f:
        assert {r["run"]: r["status"] for r in csv.DictReader(f)} == dict.fromkeys(names, "done")
    student, teacher = sub / names[0], sub / names[1]
    assert (student / "config.yaml").stat().st_mtime_ns > (teacher / "results.json").stat().st_mtime_ns
    assert any((sub / "submitit").glob("*_log.out"))  # the jobs' own logs
    # A rerun submits only what is unfinished: nothing here.
    stamps = {p: p.stat().st_mtime_ns for p in sub.glob("*/results.json")}
    run_sweep(str(exp), [], tmp_path, data_root, "sub", progress_mode="off", submitit=LOCAL)
    assert {p: p.stat().st_mtime_ns for p in sub.glob("*/results.json")} == stamps


@needs_mnist
def test_a_failed_job_is_reported_and_its_dependents_not_run(tmp_path: Path, data_root: Path) -> None:
    exp = tmp_path / "dist.yaml"
    exp.write_text(DISTILL_YAML)
    sweep = run_sweep(str(exp), ["variant=orphan,teacher", "seed=0"], tmp_path, data_root, "f",
                      progress_mode="off", submitit=LOCAL)
    with open(sweep / "sweep.csv", newline="") as f:
        status = {r["run"]: r["status"] for r in csv.DictReader(f)}
    assert status == {"variant=orphan,seed=0": "failed", "variant=teacher,seed=0": "done"}


def test_the_cli_needs_the_launcher_for_its_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "sweep", "mnist_mlp", "seed=0,1", "--submitit", "cluster=local",
                           "--out", str(tmp_path))
    assert code == 2 and "add --launcher submitit" in err and not any(tmp_path.iterdir())
