"""Two processes, one run folder: a run folder is locked (flock) by the process that trains it, for as long as
that process lives. A second `dla run ... resume=true run_name=X` while X still trains is refused in one line and
writes nothing; once the first process dies, even by kill -9, the kernel has dropped the lock and resume works.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from ..conftest import needs_mnist, one_line_error, run_cli
from .conftest import RUN, spawn, wait_for_line

pytestmark = needs_mnist


def _epochs_and_splits(run_dir: Path) -> list[tuple[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [(r["epoch"], r["split"]) for r in csv.DictReader(f)]


def test_resume_while_the_run_still_trains_is_refused_and_kill_9_leaves_no_stale_lock(
        tmp_path: Path, proof, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    run_dir = out / "mnist_mlp" / "busy"
    resume = ["run", "mnist_mlp", *RUN, "run_name=busy", "resume=true", "--out", str(out)]
    # The first process saves epoch 1, then stops inside its 2nd write of last.pt and waits there: alive, training.
    proc = spawn(["run", "mnist_mlp", *RUN, "run_name=busy", "--out", str(out)], tmp_path,
                 DLA_FAULT_HANG_IN_CHECKPOINT="last.pt:2")
    try:
        wait_for_line(proc, "dla-fault: hanging in write 2", timeout=600)  # a loaded 2-core machine is slow
        before = (run_dir / "metrics.csv").read_bytes()
        with proof.check("concurrency"):  # the second writer is refused before it touches anything
            one_line_error(capsys, resume, f"run folder {run_dir} is in use by another dla process",
                                  f"pid {proc.pid}")
            assert (run_dir / "metrics.csv").read_bytes() == before
    finally:
        proc.kill()  # SIGKILL: no handler runs, nothing unlocks but the kernel
        proc.communicate(timeout=60)
    with proof.check("concurrency"):  # no stale lock: the run continues, and each (epoch, split) is there once
        code, stdout, err = run_cli(capsys, *resume)
        assert code == 0, err
        assert f"resuming {run_dir} after epoch 1" in stdout
        rows = _epochs_and_splits(run_dir)
        assert rows == [(str(e), s) for e in range(1, 5) for s in ("train", "val")], rows


def test_a_lock_is_re_entrant_in_one_process_and_released_after_the_run(tmp_path: Path, proof) -> None:
    import fcntl
    import os

    from dla.errors import RunDirError
    from dla.runs import LOCK_NAME, held_run_locks, lock_run_dir, release_run_locks

    folder = tmp_path / "r"
    folder.mkdir()
    with proof.check("concurrency"):
        before = held_run_locks()
        lock_run_dir(folder)
        lock_run_dir(folder)  # this process again (a sweep's points in turn): no self-deadlock
        fd = os.open(folder / LOCK_NAME, os.O_RDWR)  # another open file description, as another process has
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            release_run_locks(keep=before)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free now
            with pytest.raises(RunDirError, match="in use by another dla process"):
                lock_run_dir(folder)
        finally:
            os.close(fd)
        lock_run_dir(folder)
        release_run_locks(keep=before)
