"""Interruptions: SIGINT, SIGTERM and kill -9 sent to a real `dla run` process at a real moment.

What survives: the last finished epoch's checkpoint, whole and loadable; a resumed run ends with exactly the
metrics of a run that was never interrupted (CPU, seeded). The moment "during a checkpoint write" is hit for
certain with the inert-unless-set hook DLA_FAULT_HANG_IN_CHECKPOINT (dla.train.checkpoint).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from dla.errors import CheckpointError
from dla.train.checkpoint import load_checkpoint

from ..conftest import needs_mnist, one_line_error, run_cli
from .conftest import RUN, error_line, metric_rows, spawn, wait_for, wait_for_line

pytestmark = needs_mnist


def _resume(capsys: pytest.CaptureFixture[str], out: Path, name: str) -> tuple[int, str, str]:
    return run_cli(capsys, "run", "mnist_mlp", *RUN, f"run_name={name}", "resume=true", "--out", str(out))


def _same_as_reference(run_dir: Path, reference: Path) -> None:
    got, want = json.loads((run_dir / "results.json").read_text()), json.loads((reference / "results.json").read_text())
    assert got["test"] == want["test"]  # exactly: same floats, not approximately
    assert (got["best_epoch"], got["epochs_run"]) == (want["best_epoch"], want["epochs_run"]) == (4, 4)
    assert got["confusion_matrix"] == want["confusion_matrix"]
    assert metric_rows(run_dir) == metric_rows(reference)  # every epoch's train and val numbers


def _no_temp_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.rglob(".*.tmp"))


def test_sigint_during_training_keeps_a_resumable_checkpoint_and_resume_is_exact(
        tmp_path: Path, reference_run: Path, proof, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    run_dir = out / "mnist_mlp" / "int"
    proc = spawn(["run", "mnist_mlp", *RUN, "run_name=int", "--out", str(out)], tmp_path)
    with proof.check("interruptions"):  # Ctrl-C in the middle of training
        wait_for(proc, (run_dir / "checkpoints" / "last.pt").is_file)  # epoch 1 is saved: training epoch 2
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        line = error_line(err)
        assert proc.returncode == 2
        assert "interrupted;" in line and "resume=true run_name=int" in line, line
        epoch = load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"]
        assert 1 <= epoch < 4
        assert not (run_dir / "results.json").exists()  # an interrupted run never looks finished
        assert _no_temp_files(run_dir) == []
    with proof.check("interruptions"):  # continue it: the same numbers as the run that never stopped
        code, stdout, err = _resume(capsys, out, "int")
        assert code == 0, err
        assert f"resuming {run_dir} after epoch {epoch}" in stdout
        _same_as_reference(run_dir, reference_run)


def test_kill_9_during_a_checkpoint_write_leaves_the_previous_one_intact(
        tmp_path: Path, reference_run: Path, proof, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    run_dir = out / "mnist_mlp" / "k9"
    ckpts = run_dir / "checkpoints"
    proc = spawn(["run", "mnist_mlp", *RUN, "run_name=k9", "--out", str(out)], tmp_path,
                 DLA_FAULT_HANG_IN_CHECKPOINT="last.pt:2")  # epoch 2's last.pt stops half-written
    with proof.check("interruptions"):
        wait_for_line(proc, "dla-fault: hanging in write 2")
        (partial,) = ckpts.glob(".last.pt.*.tmp")
        whole = (ckpts / "last.pt").stat().st_size
        assert 0 < partial.stat().st_size < whole  # really in the middle of the write
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        assert load_checkpoint(ckpts / "last.pt")["epoch"] == 1  # the previous checkpoint, whole
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_checkpoint(partial)  # what the write had got to would not have loaded
        assert not (run_dir / "results.json").exists()
    with proof.check("interruptions"):
        code, stdout, err = _resume(capsys, out, "k9")
        assert code == 0, err
        assert f"resuming {run_dir} after epoch 1" in stdout
        assert _no_temp_files(run_dir) == []  # the killed write's temp file was swept away
        _same_as_reference(run_dir, reference_run)


def test_sigterm_during_a_checkpoint_write_cleans_up_and_keeps_the_previous_one(tmp_path: Path, proof) -> None:
    out = tmp_path / "runs"
    ckpts = out / "mnist_mlp" / "term" / "checkpoints"
    proc = spawn(["run", "mnist_mlp", *RUN, "run_name=term", "--out", str(out)], tmp_path,
                 DLA_FAULT_HANG_IN_CHECKPOINT="last.pt:2")
    with proof.check("interruptions"):  # schedulers and torchrun stop a job with SIGTERM
        wait_for_line(proc, "dla-fault: hanging in write 2")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + signal.SIGTERM and err.strip() == ""  # a clean exit, conventional status
        assert load_checkpoint(ckpts / "last.pt")["epoch"] == 1
        assert sorted(p.name for p in ckpts.iterdir()) == ["best.pt", "last.pt"]  # the half file was removed


def test_ctrl_c_before_the_first_checkpoint_says_there_is_nothing_to_resume(
        tmp_path: Path, proof, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from dla.train.loop import Trainer

    def ctrl_c(self, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_one_epoch", ctrl_c)  # in-process: the moment is epoch 1, for certain
    with proof.check("interruptions"):
        line = one_line_error(capsys, ["run", "mnist_mlp", *RUN, "run_name=early", "--out", str(tmp_path)],
                              "before the first epoch finished; nothing to resume")
        assert "resume=true" not in line
        assert list((tmp_path / "mnist_mlp" / "early" / "checkpoints").glob("*")) == []


# A sweep point small enough to run in a second: seeded noise images (no dataset file), a tiny MLP.
SWEEP_POINT = ["data.name=noise", "data.image_size=8", "data.channels=1", "data.limit_train=300",
               "data.val_size=100", "data.limit_test=100", "data.batch_size=100", "data.augment.crop_padding=0",
               "model.width=16", "train.epochs=2", "tracking.progress=off", "tracking.tensorboard=false",
               "device=cpu"]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_sweep_interrupted_before_a_points_first_checkpoint_continues(
        tmp_path: Path, proof, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        jobs: str) -> None:
    from dla.train.loop import Trainer

    out = tmp_path / "runs"
    sweep = ["sweep", "mnist_mlp", "seed=0,1", *SWEEP_POINT, "--name", "s3", "--out", str(out)]
    point = out / "mnist_mlp" / "s3" / "seed=0"
    real = Trainer.train_one_epoch

    def ctrl_c(self, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_one_epoch", ctrl_c)  # Ctrl-C in point seed=0's first epoch, for certain
    one_line_error(capsys, sweep, "interrupted before the first epoch finished")
    assert (point / "config.yaml").is_file() and not (point / "checkpoints" / "last.pt").exists()
    monkeypatch.setattr(Trainer, "train_one_epoch", real)
    with proof.check("interruptions"):  # the same command continues: the point starts again, the sweep finishes
        if jobs == "1":
            code, stdout, err = run_cli(capsys, *sweep)
        else:  # each point in its own worker process
            from .conftest import dla

            done = dla([*sweep, "--jobs", jobs], tmp_path, timeout=300)
            code, stdout, err = done.returncode, done.stdout, done.stderr
        assert code == 0, stdout + err
        assert "already exists" not in stdout + err
        for seed in (0, 1):
            results = json.loads((point.parent / f"seed={seed}" / "results.json").read_text())
            assert results["epochs_run"] == 2 and results["seed"] == seed
