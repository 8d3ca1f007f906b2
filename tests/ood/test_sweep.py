"""`dla ood SWEEP_DIR`: every finished run scored, one table of mean ± sample std per config, checked by hand."""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dla.runs import cpu_model
from dla.sweep import run_sweep

from ..conftest import DATA_ROOT, QUICK, needs_mnist, one_line_error, run_cli

ARGS = [*QUICK, "train.epochs=1", "model.depth=1,2", "seed=0,1", "tracking.tensorboard=false"]
RUNS = ["depth=1,seed=0", "depth=1,seed=1", "depth=2,seed=0", "depth=2,seed=1"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield run_sweep("mnist_mlp", ARGS, tmp_path_factory.mktemp("runs"), DATA_ROOT, "s", progress_mode="off")


def _line(text: str, *cells: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith("| " + " | ".join(cells) + " |")]
    return line


def _ms(values: list[float]) -> str:
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


@needs_mnist
def test_a_sweep_folder_is_one_table_of_mean_and_std_over_its_runs(capsys: pytest.CaptureFixture[str], sweep: Path,
                                                                   tmp_path: Path) -> None:
    copy = tmp_path / "s"
    shutil.copytree(sweep, copy)
    unfinished = copy / "depth=3,seed=0"
    unfinished.mkdir()
    shutil.copy(copy / RUNS[0] / "config.yaml", unfinished / "config.yaml")
    code, out, err = run_cli(capsys, "ood", str(copy), "--ood", "noise,gaussian,fgsm:8/255", "--methods",
                             "msp,energy", "--limit", "100")
    assert code == 0, err
    folder = copy / "ood"
    assert out == (folder / "summary.md").read_text() + f"ood folder: {folder}\n"
    assert "Not scored (unfinished runs): depth=3,seed=0" in out and not (unfinished / "ood").exists()
    trained = json.loads((copy / RUNS[0] / "results.json").read_text())
    assert f" Models trained on {trained['data']['name']} (" in out  # the training data named, as in a summary
    per_run = json.loads((folder / "results.json").read_text())["runs"]
    assert list(per_run) == RUNS  # the sweep's order
    mine = {name: json.loads((copy / name / "ood" / "results.json").read_text()) for name in RUNS}
    assert all(per_run[n]["ood"] == mine[n]["ood"] for n in RUNS)  # each run has its own ood/ folder too
    # where the scores were measured: each run's results.json and table, and the summary's caption
    assert all(mine[n]["machine"]["cpu_model"] == cpu_model() for n in RUNS)
    assert all(mine[n]["machine"]["torch"] == torch.__version__ for n in RUNS)
    measured = f" Measured on: {cpu_model()}, {torch.get_num_threads()} threads, cpu, torch {torch.__version__}."
    assert measured in out and measured in (copy / RUNS[0] / "ood" / "table.md").read_text()
    for config, names in (("depth=1", RUNS[:2]), ("depth=2", RUNS[2:])):
        for s, group in (("noise", "far"), ("gaussian", "far"), ("fgsm:8/255", "adversarial")):
            for method in ("msp", "energy"):
                values = [mine[n]["ood"][s]["methods"][method] for n in names]
                line = _line(out, config, group, s, method)
                auroc = _ms([v["auroc"] for v in values])
                mark = " †" if statistics.fmean(v["auroc"] for v in values) <= 0.4 else ""
                assert line == (f"| {config} | {group} | {s} | {method} | {auroc}{mark} | "
                                + " | ".join(_ms([v[k] for v in values]) for k in ("aupr_in", "aupr_out", "fpr95"))
                                + " | 2 |"), line
            # the far group's mean row: each run's mean over noise and gaussian, then mean ± std over the runs
            means = [statistics.fmean(mine[n]["ood"][x]["methods"]["msp"]["fpr95"] for x in ("noise", "gaussian"))
                     for n in names]
            assert _line(out, config, "far", "mean of 2 sets", "msp").split(" | ")[7] == _ms(means)
            assert [mine[n]["groups"]["far"]["methods"]["msp"]["fpr95"] for n in names] == pytest.approx(means)
    assert "| config | group | OOD set | method | AUROC | AUPR-in | AUPR-out | FPR95 | n |" in out


@needs_mnist
def test_a_bad_request_on_a_sweep_is_one_line_and_writes_nothing(capsys: pytest.CaptureFixture[str], sweep: Path,
                                                                 tmp_path: Path) -> None:
    copy = tmp_path / "s"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("ood"))
    one_line_error(capsys, ["ood", str(copy), "--ood", "cifar11"], "unknown OOD set 'cifar11'")
    one_line_error(capsys, ["ood", str(copy), "--ood", "heldout"], "--ood heldout needs a run trained on some")
    assert not list(copy.rglob("ood"))
    empty = tmp_path / "empty" / "variant=a,seed=0"
    empty.mkdir(parents=True)
    shutil.copy(copy / RUNS[0] / "config.yaml", empty / "config.yaml")
    one_line_error(capsys, ["ood", str(empty.parent)], "has no finished run")


def _scored(err: str) -> list[str]:
    """The runs a `dla ood SWEEP` log says it scored (not reused)."""
    return [ln.split(": ")[1] for ln in err.splitlines() if ln.startswith("run ") and "reusing" not in ln]


@needs_mnist
def test_a_second_evaluation_reuses_runs_scored_with_the_same_request_on_the_same_weights(
        capsys: pytest.CaptureFixture[str], sweep: Path, tmp_path: Path) -> None:
    import torch

    copy = tmp_path / "s"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("ood"))
    argv = ["ood", str(copy), "--ood", "noise,gaussian", "--methods", "msp,energy", "--limit", "60"]
    code, first, err = run_cli(capsys, *argv)
    assert code == 0 and _scored(err) == RUNS, err
    stamps = {n: (copy / n / "ood" / "results.json").stat().st_mtime_ns for n in RUNS}

    code, again, err = run_cli(capsys, *argv)
    assert code == 0 and _scored(err) == [] and err.count("reusing its ood/results.json") == 4, err
    assert again == first  # the same table, rebuilt from the saved rows
    assert {n: (copy / n / "ood" / "results.json").stat().st_mtime_ns for n in RUNS} == stamps

    # New weights in one run (as after a resume): that run alone is scored again.
    best = copy / RUNS[1] / "checkpoints" / "best.pt"
    state = torch.load(best, weights_only=True)
    key = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][key] = state["model"][key] + 0.01
    torch.save(state, best)
    (copy / RUNS[2] / "ood" / "results.json").write_text("{not json")  # unreadable: scored again, rewritten
    code, _, err = run_cli(capsys, *argv)
    assert code == 0 and _scored(err) == [RUNS[1], RUNS[2]], err
    assert json.loads((copy / RUNS[2] / "ood" / "results.json").read_text())["rows"]

    # Another request (one option differs) or --rescore: every run is scored again.
    code, _, err = run_cli(capsys, *argv[:-1], "50")
    assert code == 0 and _scored(err) == RUNS, err
    code, _, err = run_cli(capsys, *argv[:-1], "50", "--rescore")
    assert code == 0 and _scored(err) == RUNS, err
