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
import torch

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


def _same_final_weights(run_dir: Path, reference: Path) -> None:
    got = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    want = load_checkpoint(reference / "checkpoints" / "last.pt")["model"]
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)  # bit for bit


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
        state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        epoch, partial = state["epoch"], state.get("partial")
        assert 1 <= epoch < 4
        assert not (run_dir / "results.json").exists()  # an interrupted run never looks finished
        assert _no_temp_files(run_dir) == []
    with proof.check("interruptions"):  # continue it: the same numbers as the run that never stopped
        code, stdout, err = _resume(capsys, out, "int")
        assert code == 0, err
        # Inside the batch loop the signal is checkpointed at its batch; during an evaluation or a checkpoint
        # write it stops at once, and the last finished epoch resumes.
        where = (f"in epoch {partial['epoch']}, batch {partial['batch']} of 40" if partial
                 else f"after epoch {epoch}")
        assert f"resuming {run_dir} {where}" in stdout
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


# Inside an epoch (train.checkpoint_every_s, dla.train.interrupt). RUN's epochs are 40 steps; the hook
# DLA_FAULT_SIGNAL_AT_STEP=N:SIG sends the signal right after the process's Nth optimizer step, for certain.

def test_sigint_inside_an_epoch_checkpoints_that_batch_and_resume_is_exact(
        tmp_path: Path, reference_run: Path, proof, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    run_dir = out / "mnist_mlp" / "mid"
    proc = spawn(["run", "mnist_mlp", *RUN, "run_name=mid", "--out", str(out)], tmp_path,
                 DLA_FAULT_SIGNAL_AT_STEP="60:INT")  # step 60 = batch 20 of epoch 2
    with proof.check("interruptions"):
        _, err = proc.communicate(timeout=120)
        line = error_line(err)
        assert proc.returncode == 2
        assert f"{run_dir / 'checkpoints' / 'last.pt'} holds epoch 2, batch 20 of 40;" in line, line
        assert "resume=true run_name=mid" in line
        state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        assert state["epoch"] == 1 and (state["partial"]["epoch"], state["partial"]["batch"]) == (2, 20)
        assert not (run_dir / "results.json").exists() and _no_temp_files(run_dir) == []
    with proof.check("interruptions"):  # the same 20 remaining batches, in the same order: the same run
        code, stdout, err = _resume(capsys, out, "mid")
        assert code == 0, err
        assert f"resuming {run_dir} in epoch 2, batch 20 of 40" in stdout
        _same_as_reference(run_dir, reference_run)  # epoch 2's train metrics too: half saved, half resumed
        _same_final_weights(run_dir, reference_run)


def test_sigterm_inside_an_epoch_checkpoints_quietly_and_resume_is_exact(
        tmp_path: Path, reference_run: Path, proof, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    run_dir = out / "mnist_mlp" / "mterm"
    proc = spawn(["run", "mnist_mlp", *RUN, "run_name=mterm", "--out", str(out)], tmp_path,
                 DLA_FAULT_SIGNAL_AT_STEP="95:TERM")  # batch 15 of epoch 3
    with proof.check("interruptions"):  # a scheduler's stop: checkpoint, then the conventional status
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + signal.SIGTERM and err.strip() == "", err
        state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        assert state["epoch"] == 2 and state["partial"]["batch"] == 15
    with proof.check("interruptions"):
        code, stdout, err = _resume(capsys, out, "mterm")
        assert code == 0, err
        assert f"resuming {run_dir} in epoch 3, batch 15 of 40" in stdout
        _same_as_reference(run_dir, reference_run)
        _same_final_weights(run_dir, reference_run)


def test_kill_9_after_timed_mid_epoch_checkpoints_resumes_from_the_last_one_exactly(
        tmp_path: Path, reference_run: Path, proof, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    run_dir = out / "mnist_mlp" / "timed"
    every = "train.checkpoint_every_s=0.000001"  # every step: the last one before the kill is step 69
    proc = spawn(["run", "mnist_mlp", *RUN, every, "run_name=timed", "--out", str(out)], tmp_path,
                 DLA_FAULT_SIGNAL_AT_STEP="70:KILL")
    with proof.check("interruptions"):  # no handler runs: only what the timer already wrote survives
        proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL
        state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        assert state["epoch"] == 1 and state["partial"]["batch"] == 29
    with proof.check("interruptions"):
        code, stdout, err = run_cli(capsys, "run", "mnist_mlp", *RUN, every, "run_name=timed", "resume=true",
                                    "--out", str(out))
        assert code == 0, err
        assert f"resuming {run_dir} in epoch 2, batch 29 of 40" in stdout
        _same_as_reference(run_dir, reference_run)
        _same_final_weights(run_dir, reference_run)
        assert _no_temp_files(run_dir) == []


def test_resumed_runs_drop_the_gradient_flow_rows_written_after_their_checkpoint(tmp_path: Path) -> None:
    from torch import nn

    from dla.train.gradflow import GradFlowRecorder

    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    rec = GradFlowRecorder(model, 5, tmp_path / "gradflow.csv")
    for step in (5, 10, 15):
        model(torch.ones(1, 3)).sum().backward()
        rec.before_step(step, 1)
        rec.after_step()
    text = (tmp_path / "gradflow.csv").read_text()
    rec.drop_after(12)  # a checkpoint after step 12: the rows of step 15 are written again by the resumed run
    kept = (tmp_path / "gradflow.csv").read_text()
    assert kept.splitlines() == [ln for ln in text.splitlines() if not ln.startswith("15,")]
    assert [ln.split(",")[0] for ln in kept.splitlines()[1:]] == ["5", "5", "10", "10"]
