"""Knowledge distillation: the loss by hand, its reductions, a frozen teacher, cached vs online soft targets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dla.config import load_config
from dla.errors import ConfigError
from dla.sweep import run_sweep
from dla.train import run_experiment
from dla.train.checkpoint import load_checkpoint
from dla.train.losses import distillation_loss

from ..conftest import needs_mnist

STUDENT = ["data.name=mnist", "data.limit_train=1200", "data.val_size=200", "data.limit_test=300",
           "data.batch_size=100", "model.width=4", "train.epochs=2", "tracking.progress=off",
           "tracking.tensorboard=false", "train.amp_cpu=false"]  # fp32 everywhere: the same numbers on any CPU


def test_the_loss_equals_a_hand_computation_on_fixed_logits() -> None:
    s = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    t = torch.tensor([[1.0, 2.0, 0.0], [-1.0, 0.0, 4.0]])
    y = torch.tensor([0, 2])
    temp, alpha = 2.0, 0.3

    def softmax(row: list[float]) -> list[float]:
        e = [math.exp(v / temp) for v in row]
        return [v / sum(e) for v in e]

    ce = sum(-math.log(math.exp(s[i, y[i]]) / sum(math.exp(v) for v in s[i].tolist())) for i in range(2)) / 2
    kl = sum(sum(p * math.log(p / q) for p, q in zip(softmax(t[i].tolist()), softmax(s[i].tolist()), strict=True))
             for i in range(2)) / 2
    expected = alpha * ce + (1 - alpha) * temp**2 * kl
    assert distillation_loss(s, t, y, temp, alpha).item() == pytest.approx(expected, rel=1e-6)


def test_alpha_one_is_plain_cross_entropy_and_a_perfect_copy_costs_only_the_label_term() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    y = torch.randint(0, 5, (8,), generator=g)
    torch.testing.assert_close(distillation_loss(s, t, y, 1.0, 1.0), F.cross_entropy(s, y))
    torch.testing.assert_close(distillation_loss(s, t, y, 1.0, 1.0), distillation_loss(s, t * 7, y, 1.0, 1.0))
    # A student equal to its teacher has zero KL, whatever T.
    for temp in (1.0, 4.0):
        torch.testing.assert_close(distillation_loss(s, s, y, temp, 0.25), 0.25 * F.cross_entropy(s, y))


def test_caching_teacher_outputs_with_augmentation_on_is_refused() -> None:
    with pytest.raises(ConfigError, match="augmentation is on"):
        load_config("distill", ["distill.teacher=somewhere", "distill.teacher_outputs=cached"])


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ..conftest import DATA_ROOT

    out = tmp_path_factory.mktemp("teacher")
    cfg = load_config("distill", [*STUDENT, "model.width=8", "run_name=teacher", "train.epochs=1"])
    return run_experiment(cfg, out, DATA_ROOT).path


@needs_mnist
@pytest.mark.parametrize("outputs", ["online", "cached"])
def test_distillation_trains_the_student_and_leaves_the_teacher_untouched(
        teacher: Path, tmp_path: Path, data_root: Path, outputs: str) -> None:
    before = load_checkpoint(teacher / "checkpoints" / "best.pt")["model"]
    extra = ["data.augment.flip=false", "data.augment.crop_padding=0"] if outputs == "cached" else []
    cfg = load_config("distill", [*STUDENT, *extra, f"distill.teacher={teacher}",
                                  f"distill.teacher_outputs={outputs}"])
    run = run_experiment(cfg, tmp_path, data_root)
    after = load_checkpoint(teacher / "checkpoints" / "best.pt")["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert run.complete


@needs_mnist
def test_cached_and_online_soft_targets_train_the_same_student(teacher: Path, tmp_path: Path, data_root: Path):
    common = [*STUDENT, "data.augment.flip=false", "data.augment.crop_padding=0", f"distill.teacher={teacher}",
              "model.norm=none"]  # no BatchNorm: then both see bit-identical batches and teacher outputs
    runs = [run_experiment(load_config("distill", [*common, f"distill.teacher_outputs={o}", f"run_name={o}"]),
                           tmp_path, data_root) for o in ("online", "cached")]
    a, b = (load_checkpoint(r.last)["model"] for r in runs)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


@needs_mnist
def test_a_bad_teacher_is_one_clear_error(tmp_path: Path, data_root: Path, teacher: Path) -> None:
    with pytest.raises(ConfigError, match="not a finished run folder"):
        run_experiment(load_config("distill", [*STUDENT, f"distill.teacher={tmp_path}"]), tmp_path, data_root)
    with pytest.raises(ConfigError, match="trained on 'mnist'"):
        run_experiment(load_config("distill", [*STUDENT, "data.name=fashion_mnist", f"distill.teacher={teacher}"]),
                       tmp_path, data_root)


@needs_mnist
def test_dla_run_distill_teacher_run_dir_distils_from_that_run(
        teacher: Path, tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dla.cli import main

    args = ["--out", str(tmp_path), "--data-root", str(data_root), *STUDENT, "run_name=student"]
    assert main(["run", "distill", str(teacher), *args]) == 0
    assert load_config(str(tmp_path / "distill" / "student" / "config.yaml")).distill.teacher == str(teacher)
    capsys.readouterr()
    assert main(["run", "distill", str(teacher), str(tmp_path), *args]) == 2
    assert main(["run", "distill", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"dla: error: 2 run folders given ({teacher}, {tmp_path}); name one teacher run",
                   f"dla: error: {tmp_path} is a folder but not a run folder (no config.yaml); give the teacher's "
                   "run folder, as printed by `dla run`"]


@needs_mnist
def test_the_distill_sweep_trains_teacher_student_and_distilled_student(tmp_path: Path, data_root: Path) -> None:
    sweep = run_sweep("distill", [*STUDENT, "train.epochs=1", "seed=1"], tmp_path, data_root, "s")
    table = (sweep / "summary.md").read_text()
    for v in ("teacher", "student", "distilled"):
        assert f"| variant={v} |" in table
    saved = load_config(str(sweep / "variant=distilled,seed=1" / "config.yaml"))
    assert saved.distill.teacher == str(sweep / "variant=teacher,seed=1") and saved.model.width == 4
    assert load_config(str(sweep / "variant=teacher,seed=1" / "config.yaml")).model.width == 32
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name != "plots") == [
        "variant=distilled,seed=1", "variant=student,seed=1", "variant=teacher,seed=1"]
