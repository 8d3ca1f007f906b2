"""`dla lab N`: the packaged lab plans are valid command lines, a lab runs its steps in order into one report,
resumes without redoing finished evaluations, and a failed step stops it with one line; lab 3's smoke budget end to
end on the real CIFAR-10 JPEG copy and Tiny-ImageNet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dla.cli import build_parser
from dla.config import load_config
from dla.labs import lab_numbers, load_plan
from dla.labs import plan as plan_mod

from .conftest import DATA_ROOT, needs_data, one_line_error, run_cli

PLANS = [(lab, budget) for lab in lab_numbers() for budget in ("smoke", "cpu", "full")]


@pytest.mark.parametrize(("lab", "budget"), PLANS)
def test_every_packaged_step_is_a_valid_dla_command_on_a_known_experiment(lab: int, budget: str,
                                                                          tmp_path: Path) -> None:
    plan = load_plan(lab, budget)
    assert plan.steps and plan.about and plan.sweep_name == f"lab{lab}-{budget}"
    parser = build_parser()
    for step in plan.steps:
        argv = step.argv(tmp_path, plan.sweep_name, plan.common)
        args, extra = parser.parse_known_args(argv)  # a misspelt option fails here, not hours into a lab
        assert args.command == step.command and all("=" in e for e in extra), (argv, extra)
        if step.command == "sweep":
            load_config(step.experiment, [a for a in [*step.args, *plan.common] if "," not in a])


def test_an_unknown_lab_or_budget_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    one_line_error(capsys, ["lab", "7"], "no lab 7; the labs are 1, 2, 3")
    one_line_error(capsys, ["lab", "3", "--budget", "huge"],
                   "lab 3 has no budget 'huge'; its budgets: smoke, cpu, full")


# A lab of its own, on seeded noise images (no dataset file): two steps that evaluate the sweep the first made.
NOISE = '["data.name=noise", "data.image_size=8", "data.channels=1", "data.limit_train=300", "data.val_size=100", ' \
        '"data.limit_test=100", "data.batch_size=100", "data.augment.crop_padding=0", "model.width=16", ' \
        '"train.epochs=1", "tracking.progress=off", "tracking.tensorboard=false", "device=cpu"]'
LAB9 = f"""title: "Lab 9: a test lab"
profiles:
  smoke:
    about: "seconds"
    set: {NOISE}
    steps:
      - [sweep, mnist_mlp, "seed=0,1"]
      - [attack, mnist_mlp, --method, fgsm, --eps, "0,0.1"]
      - [ood, mnist_mlp, --ood, "gaussian", --methods, "msp,energy", --limit, "50"]
  broken:
    about: "a step that fails"
    set: {NOISE}
    steps:
      - [sweep, mnist_mlp, "seed=0,1"]
      - [ood, mnist_mlp, --ood, "cifar11"]
  unordered:
    steps:
      - [attack, mnist_mlp]
"""


@pytest.fixture
def lab9(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    labs = tmp_path / "labs"
    labs.mkdir()
    (labs / "lab9.yaml").write_text(LAB9)
    monkeypatch.setattr(plan_mod, "LABS_DIR", labs)
    return tmp_path / "runs"


def test_a_lab_runs_its_steps_into_one_report_and_resumes_without_redoing_them(
        lab9: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "lab", "9", "--out", str(lab9))
    assert code == 0, err
    report = lab9 / "labs" / "lab9-smoke" / "report.html"
    assert out.rstrip().endswith(f"lab report: {report}")
    assert [ln.split(":")[0] for ln in out.splitlines() if ln.startswith("lab 9 step")] == \
        ["lab 9 step 1/3", "lab 9 step 2/3", "lab 9 step 3/3"]
    sweep = lab9 / "mnist_mlp" / "lab9-smoke"
    assert (sweep / "attacks" / "fgsm" / "summary.md").is_file() and (sweep / "ood" / "summary.md").is_file()
    html = report.read_text()
    for section in ("This run", "Against the lab reports", "mnist_mlp: Comparison", "mnist_mlp: Attack: fgsm",
                    "mnist_mlp: OOD detection", "measured on noise, the report on mnist"):
        assert section in html, section
    stamp = (sweep / "ood" / "summary.md").stat().st_mtime_ns

    code, out, err = run_cli(capsys, "lab", "9", "--out", str(lab9))  # again: nothing is evaluated twice
    assert code == 0, err
    assert out.count("(done before: skipped)") == 2 and "skipped (finished before)" in out
    assert (sweep / "ood" / "summary.md").stat().st_mtime_ns == stamp

    labs = plan_mod.LABS_DIR  # the lab gains a seed: the sweep trains it, and the evaluations see three runs
    (labs / "lab9.yaml").write_text(LAB9.replace('"seed=0,1"', '"seed=0,1,2"'))
    code, out, err = run_cli(capsys, "lab", "9", "--out", str(lab9))
    assert code == 0, err
    assert "(done before: skipped)" not in out
    assert json.loads((sweep / "ood" / "results.json").read_text())["runs"].keys() == {"seed=0", "seed=1", "seed=2"}


def test_a_failing_step_stops_the_lab_in_one_line_and_a_plan_out_of_order_is_refused(
        lab9: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "lab", "9", "--budget", "broken", "--out", str(lab9))
    lines = err.strip().splitlines()
    assert code == 2 and "unknown OOD set 'cifar11'" in lines[-2], err
    assert lines[-1].startswith("dla: error: lab 9 (broken) stopped at step 2 of 2 (dla ood mnist_mlp)")
    assert not (lab9 / "labs" / "lab9-broken" / "report.html").exists()
    one_line_error(capsys, ["lab", "9", "--budget", "unordered", "--out", str(lab9)],
                   "the attack step on mnist_mlp comes before any sweep of it")


@needs_data("cifar10_jpeg", "tiny_imagenet")
def test_lab_3_smoke_end_to_end_on_the_real_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "lab", "3", "--out", str(tmp_path), "--data-root", str(DATA_ROOT))
    assert code == 0, err
    html = (tmp_path / "labs" / "lab3-smoke" / "report.html").read_text()
    for needle in ("cnn_cifar10: Attack: fgsm", "cnn_cifar10: OOD detection", "adv_cifar10: Attack: pgd",
                   "3.1 ID model: 9-layer CNN without augmentation", "not comparable (a subset: 1,500 training"):
        assert needle in html, needle
    ood = json.loads((tmp_path / "cnn_cifar10" / "lab3-smoke" / "ood" / "results.json").read_text())
    groups = ood["runs"]["seed=0"]["groups"]
    assert {"near", "far", "adversarial"} <= set(groups)
