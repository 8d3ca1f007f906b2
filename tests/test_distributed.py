"""The same loop under torchrun: 2 CPU processes (gloo) against 1, failures, and any-world-size checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dla.train.checkpoint import load_checkpoint

from .conftest import DATA_ROOT, needs_data, needs_mnist

pytestmark = needs_mnist

# Dropout off and no BatchNorm: then 1 and 2 processes compute the same function of the same global batches.
# Augmentation stays on: every rank draws it for the whole global batch.
COMMON = ["mnist_mlp", "data.limit_train=2000", "data.val_size=500", "data.limit_test=500", "data.batch_size=100",
          "data.augment.crop_padding=2", "data.augment.flip=true", "model.width=64", "model.dropout=0",
          "model.norm=none", "train.epochs=3", "train.early_stopping.patience=0", "tracking.progress=off"]


def _env() -> dict[str, str]:
    env = {**os.environ, "DLA_DATA": str(DATA_ROOT), "DLA_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return env


def _torchrun(nproc: int, script: list[str], timeout: int = 240) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *script]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout)


def _plain(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dla.cli", *args], capture_output=True, text=True, env=_env(),
                          timeout=240)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def _val_rows(run: Path) -> list[str]:
    return [line.split(",")[:7] for line in (run / "metrics.csv").read_text().splitlines() if ",val," in line]


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single")
    proc = _plain(["run", *COMMON, "run_name=one", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    return out / "mnist_mlp" / "one"


def test_two_processes_train_the_same_weights_as_one(single: Path, tmp_path: Path) -> None:
    proc = _torchrun(2, ["-m", "dla.cli", "run", *COMMON, "run_name=two", "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    two = tmp_path / "mnist_mlp" / "two"
    a, b = _weights(single), _weights(two)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    # Validation metrics come from per-rank shards summed together: the same numbers as one process.
    assert _val_rows(two) == _val_rows(single)
    assert load_checkpoint(two / "checkpoints" / "last.pt")["epoch"] == 3
    t1 = json.loads((single / "results.json").read_text())["test"]
    t2 = json.loads((two / "results.json").read_text())["test"]
    assert t2 == pytest.approx(t1, rel=1e-5)
    assert proc.stdout.count("# mnist_mlp / two") == 1  # only rank 0 prints the summary


def test_a_failing_rank_fails_the_job_and_its_checkpoint_resumes_on_one_process(single: Path,
                                                                                 tmp_path: Path) -> None:
    script = tmp_path / "fail_rank1.py"
    script.write_text(
        "import sys\n"
        "import torch.distributed as dist\n"
        "from dla.train.loop import Trainer\n"
        "original = Trainer.train_one_epoch\n"
        "def failing(self, epoch):\n"
        "    if dist.get_rank() == 1 and epoch == 2:\n"
        "        raise RuntimeError('rank 1 failed on purpose in epoch 2')\n"
        "    return original(self, epoch)\n"
        "Trainer.train_one_epoch = failing\n"
        "from dla.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    proc = _torchrun(2, [str(script), "run", *COMMON, "run_name=cut", "--out", str(tmp_path)])
    assert proc.returncode != 0
    assert "rank 1 failed on purpose in epoch 2" in proc.stdout + proc.stderr
    run = tmp_path / "mnist_mlp" / "cut"
    assert not (run / "results.json").exists()
    # Only whole checkpoints remain: no temp files, and last.pt is the finished epoch 1.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    # A checkpoint written by 2 processes resumes in 1 and ends where the 1-process run ended.
    resumed = _plain(["run", *COMMON, "run_name=cut", "resume=true", "--out", str(tmp_path)])
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(single), _weights(run)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)


def test_a_sigterm_inside_an_epoch_stops_every_rank_at_one_batch_and_resumes_on_one_process(
        single: Path, tmp_path: Path) -> None:
    script = tmp_path / "term_rank1.py"
    # SIGTERM to rank 1 only, after its 25th step (epoch 2, batch 10 of 15): rank 0 must stop at the same batch.
    script.write_text(
        "import os, sys\n"
        "if os.environ.get('RANK') == '1':\n"
        "    os.environ['DLA_FAULT_SIGNAL_AT_STEP'] = '25:TERM'\n"
        "from dla.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    proc = _torchrun(2, [str(script), "run", *COMMON, "run_name=mid", "--out", str(tmp_path)])
    assert proc.returncode != 0
    run = tmp_path / "mnist_mlp" / "mid"
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and (state["partial"]["epoch"], state["partial"]["batch"]) == (2, 10)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    resumed = _plain(["run", *COMMON, "run_name=mid", "resume=true", "--out", str(tmp_path)])
    assert resumed.returncode == 0, resumed.stderr
    assert "in epoch 2, batch 10 of 15" in resumed.stdout
    a, b = _weights(single), _weights(run)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    # Epoch 2's training metrics: both ranks' first 10 batches (saved by rank 0), then 5 on one process.
    rows = {(r.split(",")[0], r.split(",")[1]): r.split(",")[2:4] for r in
            (run / "metrics.csv").read_text().splitlines()[1:]}
    want = {(r.split(",")[0], r.split(",")[1]): r.split(",")[2:4] for r in
            (single / "metrics.csv").read_text().splitlines()[1:]}
    assert rows.keys() == want.keys()
    for key in want:
        assert [float(v) for v in rows[key]] == pytest.approx([float(v) for v in want[key]], rel=1e-5), key


LM = ["dante_char", "model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.dropout=0", "lm.block_size=16",
      "data.batch_size=8", "lm.max_iters=30", "lm.eval_interval=10", "lm.eval_iters=3", "lm.warmup_iters=5",
      "lm.sample_tokens=20", "tracking.tensorboard=false", "tracking.progress=off"]


@needs_data("dante_inferno")
def test_a_language_model_under_torchrun_trains_one_model_into_one_run_folder_as_one_process(tmp_path: Path) -> None:
    one = _plain(["run", *LM, "run_name=one", "--out", str(tmp_path)])
    assert one.returncode == 0, one.stderr
    two = _torchrun(2, ["-m", "dla.cli", "run", *LM, "run_name=two", "--out", str(tmp_path)])
    assert two.returncode == 0, two.stdout + two.stderr
    assert sorted(p.name for p in (tmp_path / "dante_char").iterdir()) == ["one", "two"]  # one folder per launch
    assert two.stdout.count("step    30/30") == 1  # rank 0 alone reports
    a, b = _weights(tmp_path / "dante_char" / "one"), _weights(tmp_path / "dante_char" / "two")
    # The same global batches, each rank half of them, gradients averaged: the same steps up to float rounding,
    # which AdamW's normalised steps carry into the weights (about 1e-4 after 30 steps). The key bias is left
    # out: softmax ignores it, so its exact gradient is 0 and AdamW turns pure rounding noise into full steps.
    for k in a:
        if not k.endswith("attn.qkv.bias"):
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-3, msg=k)
    rows = [[r.split(",") for r in (tmp_path / "dante_char" / n / "metrics.csv").read_text().splitlines()[1:]]
            for n in ("one", "two")]
    assert [r[:2] for r in rows[0]] == [r[:2] for r in rows[1]]  # the same evaluations
    assert [float(r[2]) for r in rows[1]] == pytest.approx([float(r[2]) for r in rows[0]], abs=1e-3)  # the loss curve
    results = json.loads((tmp_path / "dante_char" / "two" / "results.json").read_text())
    assert results["device"] == "cpu x 2 processes" and results["machine"]["world_size"] == 2


def test_a_batch_that_does_not_split_is_one_clear_line(tmp_path: Path) -> None:
    proc = _torchrun(2, ["-m", "dla.cli", "run", *COMMON, "data.batch_size=101", "--out", str(tmp_path)])
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("dla: error:")]
    # Every rank raises the same one-line error; torchrun may stop one rank before it prints.
    assert 1 <= len(errors) <= 2 and all("must divide by the 2 processes" in e for e in errors)
    assert not (tmp_path / "mnist_mlp").exists()


def test_accelerate_launch_runs_the_same_loop(single: Path, tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    exe = Path(sys.executable).with_name("accelerate")
    # --multi_gpu is accelerate's multi-process mode; device=cpu keeps it on gloo. (`--cpu --num_processes 2`
    # would silently run a single process.)
    cmd = [str(exe), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "-m", "dla.cli", "run", *COMMON, "device=cpu", "run_name=acc",
           "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = tmp_path / "mnist_mlp" / "acc"
    assert "cpu x 2 processes" in proc.stdout
    a, b = _weights(single), _weights(run)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)


SLOW_RANK0 = """
import pathlib, sys, time, torch
from dla.distributed import all_reduce_sum, init_from_env, shutdown
d = init_from_env("cpu")
all_reduce_sum(torch.ones(1), d)
if d.main:
    time.sleep(2)  # rank 0 still writing plots while rank 1 is already done
shutdown(ok=True)
pathlib.Path(sys.argv[1], f"rank{d.rank}.left").touch()  # a file each: the ranks' stdout lines interleave
"""


def test_ranks_that_finish_at_different_times_all_exit_cleanly(tmp_path: Path) -> None:
    # gloo aborts (SIGABRT) a rank that destroys the group while a peer is still busy; shutdown waits for all.
    script = tmp_path / "slow_rank0.py"
    script.write_text(SLOW_RANK0)
    proc = _torchrun(2, [str(script), str(tmp_path)], timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.glob("*.left")) == ["rank0.left", "rank1.left"]
