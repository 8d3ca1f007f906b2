"""`dla attack RUN_DIR | SWEEP_DIR`: the numbers are evaluate_attack's, the files are whole, bad input is one line."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dla.attacks import evaluate_attack
from dla.attacks.plots import fmt_eps
from dla.attacks.run import group_name, parse_eps, robustness_table
from dla.attacks.suite import evaluate_suite
from dla.config import load_config
from dla.runs import RunDir, cpu_model
from dla.train import run_experiment
from dla.train.restore import TrainedRun, load_trained

from ..conftest import DATA_ROOT, QUICK, needs_mnist, png_size
from ..conftest import run_cli as _cli

ROW_KEYS = ("eps", "n", "loss", "accuracy", "precision", "recall", "f1")


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunDir]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLA_OFFLINE", "1")
        cfg = load_config("mnist_mlp", [*QUICK, "train.epochs=1", "tracking.tensorboard=false", "run_name=r"])
        yield run_experiment(cfg, tmp_path_factory.mktemp("runs") / "mnist_mlp", DATA_ROOT)  # about a second


@pytest.fixture(scope="module")
def trained(mlp_run: RunDir) -> TrainedRun:
    return load_trained(mlp_run.path, DATA_ROOT)


@pytest.fixture
def run(mlp_run: RunDir, tmp_path: Path) -> Path:
    """A fresh copy per test, so that each test sees only the files it wrote."""
    dst = tmp_path / "mnist_mlp" / "r"
    shutil.copytree(mlp_run.path, dst)
    return dst




def _same_rows(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for k in ROW_KEYS + (("success_rate",) if "success_rate" in w else ()):
            assert g[k] == pytest.approx(w[k], rel=1e-12, abs=0), k  # the same computation, through JSON


@needs_mnist
def test_fgsm_end_to_end_rows_files_and_the_clean_accuracy(capsys: pytest.CaptureFixture[str], run: Path,
                                                           trained: TrainedRun) -> None:
    code, out, err = _cli(capsys, "attack", str(run), "--method", "fgsm", "--eps", "0,4/255,0.1", "--grid", "4",
                          "--device", "cpu")
    assert code == 0, err
    folder = run / "attacks" / "fgsm"
    assert sorted(p.name for p in folder.iterdir()) == ["accuracy_vs_eps.png", "grid.png", "results.json",
                                                       "table.md"]
    assert out == (folder / "table.md").read_text() + f"attack folder: {folder}\n"
    results = json.loads((folder / "results.json").read_text())
    assert results["method"] == "fgsm" and results["n"] == 500 and results["target"] is None  # the whole test split
    want = evaluate_attack(trained.model, (trained.test_x, trained.test_y), "fgsm", [0, 4 / 255, 0.1])
    _same_rows(results["rows"], want)
    # eps = 0 is the clean test accuracy that the run itself reported, on the same 500 images
    clean = json.loads((run / "results.json").read_text())["test"]
    assert results["rows"][0]["accuracy"] == pytest.approx(clean["accuracy"], abs=1e-12)
    assert results["rows"][0]["loss"] == pytest.approx(clean["loss"], rel=1e-5)
    assert results["rows"][2]["accuracy"] < results["rows"][0]["accuracy"] - 0.2  # an MLP is not robust at 0.1
    lines = out.splitlines()
    assert "| eps | Loss | Accuracy | Precision | Recall |" in lines
    assert lines[lines.index("| eps | Loss | Accuracy | Precision | Recall |") + 3].startswith("| 4/255 | ")
    assert f"| {100 * clean['accuracy']:.2f}% |" in out
    w, h = png_size(folder / "grid.png")
    assert h > 400 and w > 500  # 4 rows of original + 2 eps x (adversarial, difference)
    png_size(folder / "accuracy_vs_eps.png")


@needs_mnist
def test_pgd_with_a_seed_is_evaluate_attack_after_the_same_seed(capsys: pytest.CaptureFixture[str], run: Path,
                                                               trained: TrainedRun) -> None:
    code, _, err = _cli(capsys, "attack", str(run), "--eps", "0.05,0.1", "--steps", "3", "--alpha", "1/40",
                        "--limit", "120", "--batch-size", "50", "--seed", "4", "--grid", "0", "--device", "cpu")
    assert code == 0, err
    folder = run / "attacks" / "pgd"
    assert not (folder / "grid.png").exists()
    results = json.loads((folder / "results.json").read_text())
    assert results["options"] == {"steps": 3, "alpha": 0.025, "restarts": 1} and results["n"] == 120
    torch.manual_seed(4)
    want = evaluate_attack(trained.model, (trained.test_x[:120], trained.test_y[:120]), "pgd", [0.05, 0.1],
                           batch_size=50, steps=3, alpha=0.025)
    _same_rows(results["rows"], want)


@needs_mnist
def test_square_alone_takes_its_query_budget(capsys: pytest.CaptureFixture[str], run: Path,
                                            trained: TrainedRun) -> None:
    code, out, err = _cli(capsys, "attack", str(run), "--method", "square", "--queries", "30", "--eps", "0,0.1",
                          "--n", "40", "--grid", "0", "--device", "cpu")
    assert code == 0, err
    results = json.loads((run / "attacks" / "square" / "results.json").read_text())
    assert results["options"] == {"restarts": 1, "queries": 30}
    want = evaluate_attack(trained.model, (trained.test_x[:40], trained.test_y[:40]), "square", [0, 0.1], queries=30)
    _same_rows(results["rows"], want)
    assert "queries=30" in out


@needs_mnist
@pytest.mark.parametrize(("argv", "folder", "kw"), [
    (["--targeted", "3", "--variant", "ovo"], "pgd_targeted-3_ovo", {"targeted": True, "target": 3, "variant": "ovo"}),
    (["--least-likely"], "pgd_least-likely", {"least_likely": True}),
])
def test_targeted_attacks_report_their_success_rate(capsys: pytest.CaptureFixture[str], run: Path,
                                                   trained: TrainedRun, argv: list[str], folder: str,
                                                   kw: dict) -> None:
    code, out, err = _cli(capsys, "attack", str(run), "--eps", "0,0.2", "--steps", "5", "--n", "100", "--grid", "3",
                          "--device", "cpu", *argv)
    assert code == 0, err
    results = json.loads((run / "attacks" / folder / "results.json").read_text())
    torch.manual_seed(0)
    want = evaluate_attack(trained.model, (trained.test_x[:100], trained.test_y[:100]), "pgd", [0, 0.2], steps=5,
                           **kw)
    _same_rows(results["rows"], want)
    assert "| eps | Loss | Accuracy | Precision | Recall | Target success |" in out.splitlines()
    assert results["rows"][1]["success_rate"] > results["rows"][0]["success_rate"]
    png_size(run / "attacks" / folder / "grid.png")


@needs_mnist
@pytest.mark.parametrize(("argv", "needles"), [
    (["--method", "cw"], ["unknown attack 'cw'; known: apgd-ce, apgd-dlr, apgd-t, cw-l2, deepfool, fab-t, fgsm, pgd"]),
    (["--suite", "autoattack", "--method", "pgd", "--restarts", "2"], ["--suite runs its own attacks: drop "
                                                                       "--method, --restarts"]),
    (["--suite", "autoattack", "--amp", "bf16"], ["--suite runs its own attacks: drop --amp"]),
    (["--suite", "robustbench"], ["unknown suite 'robustbench'; known: autoattack, autoattack-fast"]),
    (["--suite", "autoattack", "--steps", "0"], ["--steps must be an integer >= 1; got 0"]),
    (["--suite", "autoattack", "--queries", "0"], ["--queries must be an integer >= 1; got 0"]),
    (["--suite", "autoattack-fast", "--queries", "9"], ["--queries is Square's budget, and suite 'autoattack-fast' "
                                                        "does not run Square"]),
    (["--method", "pgd", "--queries", "9"], ["--queries does not apply to pgd (its options: --steps, --alpha, "
                                             "--restarts)"]),
    (["--method", "square", "--queries", "0"], ["--queries must be an integer >= 1; got 0"]),
    (["--suite", "autoattack", "--eps", "0,2"], ["--eps values are L_inf radii of [0, 1] images"]),
    (["--suite", "autoattack", "--rescore"], ["--suite runs its own attacks: drop --rescore"]),
    (["--eps", "0,abc"], ["--eps takes numbers such as 0.1 or 8/255; got 'abc'"]),
    (["--eps", "0,1/0"], ["--eps takes numbers such as 0.1 or 8/255; got '1/0'"]),
    (["--eps", "0,2"], ["--eps values are L_inf radii of [0, 1] images, between 0 and 1; got 2"]),
    (["--eps", "0.1,0.1"], ["--eps lists a value twice"]),
    (["--method", "fgsm", "--steps", "5"], ["--steps does not apply to fgsm (it has no step options)"]),
    (["--alpha", "big"], ["--alpha takes numbers such as 0.1 or 8/255; got 'big'"]),
    (["--alpha", "0"], ["--alpha must be a finite step size > 0"]),
    (["--alpha=-0.01"], ["--alpha must be a finite step size > 0"]),
    (["--eps=0,-0.1"], ["--eps values are L_inf radii of [0, 1] images, between 0 and 1; got -0.1"]),
    (["--targeted=-1"], ["--targeted -1 is out of range: this run has 10 classes"]),
    (["--restarts", "0"], ["--restarts must be an integer >= 1; got 0"]),
    (["--variant", "ovo"], ["--variant ovo is a targeted loss: add --targeted CLASS or --least-likely"]),
    (["--variant", "cw"], ["--variant must be one of standard, ovo, ovr; got 'cw'"]),
    (["--targeted", "cat"], ["unknown --targeted class 'cat'; this run's classes: 0=0, 1=1"]),
    (["--targeted", "10"], ["--targeted 10 is out of range: this run has 10 classes"]),
    (["--targeted", "3", "--least-likely"], ["pass either it or --targeted CLASS"]),
    (["--n", "0"], ["--n must be a positive number of test images; got 0"]),
    (["--n", "many"], ["argument --n/--limit: invalid int value: 'many'"]),
    (["--grid", "-1"], ["--grid must be a number of images >= 0"]),
    (["--device", "cuda:7"], ["device=cuda:7 but"]),
])
def test_bad_requests_are_one_line_and_write_nothing(capsys: pytest.CaptureFixture[str], run: Path, argv: list[str],
                                                     needles: list[str]) -> None:
    code, out, err = _cli(capsys, "attack", str(run), "--n", "20", *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("dla: error: "), (code, err)
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert out == "" and not (run / "attacks").exists()


@needs_mnist
def test_folders_that_are_not_runs(capsys: pytest.CaptureFixture[str], tmp_path: Path, run: Path) -> None:
    for path, needle in [(tmp_path / "nope", "is not a folder"), (run / "checkpoints", "has no config.yaml")]:
        code, _, err = _cli(capsys, "attack", str(path))
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    started = tmp_path / "sweep" / "variant=a,seed=0"
    started.mkdir(parents=True)
    shutil.copy(run / "config.yaml", started / "config.yaml")
    code, _, err = _cli(capsys, "attack", str(tmp_path / "sweep"))
    assert code == 2 and "has no finished run" in err, err


@needs_mnist
def test_a_sweep_folder_attacks_every_finished_run_and_averages_over_seeds(
        capsys: pytest.CaptureFixture[str], mlp_run: RunDir, tmp_path: Path) -> None:
    sweep = tmp_path / "adv" / "s"
    for name in ("variant=a,seed=0", "variant=a,seed=1", "variant=b,seed=0"):
        shutil.copytree(mlp_run.path, sweep / name)
    unfinished = sweep / "variant=b,seed=1"
    unfinished.mkdir()
    shutil.copy(mlp_run.config, unfinished / "config.yaml")
    # the sweep's own order (b before a here), not the folders' alphabetical one
    with open(sweep / "sweep.csv", "w", newline="") as f:  # as `dla sweep` writes it: run names hold commas
        csv.writer(f).writerows([["run", "status"], ["variant=b,seed=0", "done"], ["variant=b,seed=1", "missing"],
                                 ["variant=a,seed=0", "done"], ["variant=a,seed=1", "done"]])
    code, out, err = _cli(capsys, "attack", str(sweep), "--method", "fgsm", "--eps", "0,0.1", "--n", "100",
                          "--grid", "2", "--device", "cpu")
    assert code == 0, err
    folder = sweep / "attacks" / "fgsm"
    assert out == (folder / "summary.md").read_text() + f"attack folder: {folder}\n"
    per_run = json.loads((folder / "results.json").read_text())["runs"]
    assert list(per_run) == ["variant=b,seed=0", "variant=a,seed=0", "variant=a,seed=1"]
    for name in per_run:
        assert (sweep / name / "attacks" / "fgsm" / "table.md").is_file()
    assert not (unfinished / "attacks").exists() and "Not attacked (unfinished runs): variant=b,seed=1" in out
    acc = [r["accuracy"] for r in per_run["variant=a,seed=0"]]
    # identical copies: std 0, and the mean is the single run's number
    assert f"| variant=a | {100 * acc[0]:.2f} ± 0.00% | {100 * acc[1]:.2f} ± 0.00% | 2 |" in out
    assert f"| variant=b | {100 * acc[0]:.2f} ± 0.00% | {100 * acc[1]:.2f} ± 0.00% | 1 |" in out
    assert out.index("| variant=b |") < out.index("| variant=a |")
    assert "| Config | eps 0 (clean) | eps 0.1 | n |" in out
    assert " Models trained on mnist (" in out and "epochs configured" in out  # the training data and budget
    assert " Models trained on mnist (" in (sweep / "variant=a,seed=0" / "attacks" / "fgsm" / "table.md").read_text()
    # where the attack was measured, which need not be where the model trained: results.json, table and summary
    machine = json.loads((sweep / "variant=a,seed=0" / "attacks" / "fgsm" / "results.json").read_text())["machine"]
    assert machine["cpu_model"] == cpu_model() and machine["torch"] == torch.__version__
    assert machine["torch_threads"] == torch.get_num_threads() and machine["device"] == "cpu"
    measured = f" Measured on: {cpu_model()}, {torch.get_num_threads()} threads, cpu, torch {torch.__version__}."
    assert measured in out
    assert measured in (sweep / "variant=a,seed=0" / "attacks" / "fgsm" / "table.md").read_text()
    png_size(folder / "accuracy_vs_eps.png")


@needs_mnist
def test_a_sweep_attacked_again_reuses_the_runs_already_attacked_with_the_same_request(
        capsys: pytest.CaptureFixture[str], mlp_run: RunDir, tmp_path: Path) -> None:
    sweep = tmp_path / "adv" / "s"
    for name in ("seed=0", "seed=1"):
        shutil.copytree(mlp_run.path, sweep / name)
    argv = ["attack", str(sweep), "--method", "fgsm", "--eps", "0,0.1", "--n", "50", "--grid", "0"]
    code, first, _ = _cli(capsys, *argv)
    assert code == 0
    saved = sweep / "seed=0" / "attacks" / "fgsm" / "results.json"
    rows = json.loads(saved.read_text())["rows"]
    rows[1]["accuracy"] = 0.123456  # a planted number: only a reuse can bring it into the table
    saved.write_text(json.dumps({**json.loads(saved.read_text()), "rows": rows}))
    summary = sweep / "attacks" / "fgsm" / "results.json"
    code, out, err = _cli(capsys, *argv)
    assert code == 0 and "seed=0: reusing" in err and "seed=1: reusing" in err and out != first
    assert json.loads(summary.read_text())["runs"]["seed=0"][1]["accuracy"] == 0.123456
    code, out, err = _cli(capsys, *argv, "--n", "40")  # another request: attacked again, not reused
    assert code == 0 and "reusing" not in err
    assert json.loads(summary.read_text())["runs"]["seed=0"][1]["accuracy"] != 0.123456
    code, out, err = _cli(capsys, *argv, "--rescore")
    assert code == 0 and "reusing" not in err and out == first
    ckpt = sweep / "seed=1" / "checkpoints" / "best.pt"
    ckpt.write_bytes(ckpt.read_bytes() + b"\0")  # other weights (a retrained run) are never reused
    _, _, err = _cli(capsys, *argv)
    assert "seed=0: reusing" in err and "seed=1: reusing" not in err


def test_robustness_table_is_mean_and_sample_std_per_config() -> None:
    def rows(*acc: float) -> list[dict]:
        return [{"eps": e, "accuracy": a} for e, a in zip((0.0, 8 / 255), acc, strict=True)]

    text = robustness_table([("variant=standard", [rows(0.9, 0.1), rows(0.8, 0.3)]),
                             ("variant=pgd", [rows(0.85, 0.6)])])
    assert text.splitlines() == [
        "| Config | eps 0 (clean) | eps 8/255 | n |",
        "|---|---:|---:|---:|",
        "| variant=standard | 85.00 ± 7.07% | 20.00 ± 14.14% | 2 |",  # sample std of (0.9, 0.8) = 0.0707
        "| variant=pgd | 85.00 ± 0.00% | 60.00 ± 0.00% | 1 |",
    ]
    assert group_name("variant=pgd,seed=2") == "variant=pgd" and group_name("seed=0") == "all"


def test_eps_lists_and_their_labels() -> None:
    assert parse_eps("0, 1/255 ,8/255,0.1") == [0.0, 1 / 255, 8 / 255, 0.1]
    assert parse_eps([0, 0.5]) == [0.0, 0.5]
    assert [fmt_eps(e) for e in (0, 8 / 255, 0.1, 0.2, 0.3 / 7)] == ["0", "8/255", "0.1", "0.2", "0.04286"]
    assert fmt_eps(float(torch.tensor(8 / 255))) == "8/255" and fmt_eps(float(torch.tensor(0.2))) == "0.2"


@needs_mnist
def test_the_autoattack_suite_on_a_run_is_evaluate_suite(capsys: pytest.CaptureFixture[str], run: Path,
                                                          trained: TrainedRun) -> None:
    code, out, err = _cli(capsys, "attack", str(run), "--suite", "autoattack", "--eps", "0,0.05,0.3", "--steps", "5",
                          "--queries", "50", "--n", "40", "--seed", "2", "--device", "cpu")
    assert code == 0, err
    folder = run / "attacks" / "autoattack"
    assert out == (folder / "table.md").read_text() + f"attack folder: {folder}\n"
    results = json.loads((folder / "results.json").read_text())
    want = evaluate_suite(trained.model, (trained.test_x[:40], trained.test_y[:40]),
                          ["apgd-ce", "apgd-t", "fab-t", "square"], [0, 0.05, 0.3], seed=2,
                          options={"apgd-ce": {"steps": 5}, "apgd-t": {"steps": 5}, "fab-t": {"steps": 5},
                                   "square": {"queries": 50}})
    assert results["rows"] == want
    assert results["options"]["square"] == {"queries": 50} and results["options"]["fab-t"] == {"steps": 5}
    assert "| eps | Clean | APGD-CE | APGD-T | FAB-T | SQUARE | Worst case |" in out
    assert "autoattack: AutoAttack's standard ensemble, APGD-CE → APGD-T → FAB-T → SQUARE" in out
    assert "steps=5, Square queries=50" in out
    row = want[2]
    assert row["worst"] <= min(row["attacks"].values()) < row["clean"]  # an MLP is not robust at 0.3
    assert f"| 0.3 | {100 * row['clean']:.2f}% | {100 * row['attacks']['apgd-ce']:.2f}% |" in out
    assert results["warnings"] == [] and "WARNING" not in out  # a plain MLP masks nothing


@needs_mnist
def test_the_suite_on_a_sweep_is_mean_and_std_over_seeds(capsys: pytest.CaptureFixture[str], mlp_run: RunDir,
                                                         tmp_path: Path) -> None:
    sweep = tmp_path / "adv" / "s"
    for name in ("variant=a,seed=0", "variant=a,seed=1"):
        shutil.copytree(mlp_run.path, sweep / name)
    code, out, err = _cli(capsys, "attack", str(sweep), "--suite", "autoattack-fast", "--eps", "8/255", "--steps",
                          "3", "--n", "20", "--no-checks", "--device", "cpu")
    assert code == 0, err
    assert "autoattack-fast: APGD-CE → APGD-T, a subset of AutoAttack's standard ensemble" in out
    folder = sweep / "attacks" / "autoattack-fast"
    assert out == (folder / "summary.md").read_text() + f"attack folder: {folder}\n"
    runs = json.loads((folder / "results.json").read_text())["runs"]
    row = runs["variant=a,seed=0"]["rows"][0]
    assert runs["variant=a,seed=1"]["rows"][0] == row  # identical copies, the same seed
    cells = " | ".join(f"{100 * v:.2f} ± 0.00%" for v in [row["clean"], *row["attacks"].values(), row["worst"]])
    assert f"| variant=a | 8/255 | {cells} | 2 |" in out
