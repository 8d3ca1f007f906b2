"""Resource limits: an output disk that fills up mid-run ends the run with one clear line, exit 2, and the
last complete checkpoint intact; after freeing space, resume=true finishes with the uninterrupted numbers.

Two ways to fill the disk: a writer patched to fail half-way through a checkpoint (in-process, always
available), and a real, tiny tmpfs that a real `dla run` process writes to while the test fills it up
(needs root and mount; skipped with the reason otherwise).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import dla.train.checkpoint as checkpoint
from dla.train.checkpoint import load_checkpoint

from ..conftest import needs_mnist, one_line_error, run_cli
from .conftest import RUN, error_line, metric_rows, spawn, wait_for

pytestmark = needs_mnist


def _finished_like(run_dir: Path, reference: Path) -> None:
    import json

    got, want = json.loads((run_dir / "results.json").read_text()), json.loads((reference / "results.json").read_text())
    assert got["test"] == want["test"] and metric_rows(run_dir) == metric_rows(reference)


class _DiskFills:
    """A file object that takes half of what it is given and then reports a full disk, as write(2) does."""

    def __init__(self, f) -> None:
        self.f = f

    def write(self, data) -> int:
        data = memoryview(data)
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_disk_full_during_a_checkpoint_write_keeps_the_last_complete_one(
        tmp_path: Path, reference_run: Path, proof, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = checkpoint.atomic_write
    writes: list[str] = []

    @contextmanager
    def filling(path: Path, mode: str = "wb") -> Iterator:
        writes.append(path.name)
        with real(path, mode) as f:
            yield _DiskFills(f) if writes.count("last.pt") == 3 and path.name == "last.pt" else f

    monkeypatch.setattr(checkpoint, "atomic_write", filling)
    run_dir = tmp_path / "mnist_mlp" / "full"
    with proof.check("resources"):
        one_line_error(capsys, ["run", "mnist_mlp", *RUN, "run_name=full", "--out", str(tmp_path)],
                       "cannot write to the run folder: No space left on device",
                       f"the last complete checkpoint is {run_dir / 'checkpoints' / 'last.pt'} (epoch 2)",
                       "free space, then resume=true run_name=full")
        assert writes.count("last.pt") == 3  # it failed in epoch 3's write, half-way through
        assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 2
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]  # no half file
        assert not (run_dir / "results.json").exists()
    monkeypatch.undo()  # space freed
    with proof.check("resources"):
        code, stdout, err = run_cli(capsys, "run", "mnist_mlp", *RUN, "run_name=full", "resume=true",
                                    "--out", str(tmp_path))
        assert code == 0, err
        assert f"resuming {run_dir} after epoch 2" in stdout
        _finished_like(run_dir, reference_run)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB tmpfs at tmp_path/disk, unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real full disk needs root to mount a small tmpfs; the patched-writer test covers the logic")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the patched-writer test covers the logic")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(folder: Path) -> Path:
    """Write one file until the filesystem refuses another byte."""
    filler = folder / "filler"
    chunk = 1 << 16
    with open(filler, "wb", buffering=0) as f:
        while chunk:
            try:
                f.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                chunk //= 2
    return filler


def test_a_real_disk_filling_up_mid_run(small_disk: Path, tmp_path: Path, reference_run: Path, proof,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = small_disk / "mnist_mlp" / "tmpfs"
    last = run_dir / "checkpoints" / "last.pt"
    proc = spawn(["run", "mnist_mlp", *RUN, "run_name=tmpfs", "--out", str(small_disk)], tmp_path)
    with proof.check("resources"):
        wait_for(proc, last.is_file)  # epoch 1 is on disk; now the disk fills up under the running process
        filler = _fill(small_disk)
        _, err = proc.communicate(timeout=120)
        line = error_line(err)
        assert proc.returncode == 2, err
        assert "No space left on device; the last complete checkpoint is " in line, line
        epoch = load_checkpoint(last)["epoch"]
        assert 1 <= epoch < 4 and f"(epoch {epoch})" in line
        assert list(run_dir.rglob(".*.tmp")) == []  # the write that failed left no half file
        assert not (run_dir / "results.json").exists()
    filler.unlink()  # space freed
    with proof.check("resources"):
        code, stdout, err = run_cli(capsys, "run", "mnist_mlp", *RUN, "run_name=tmpfs", "resume=true",
                                    "--out", str(small_disk))
        assert code == 0, err
        assert f"resuming {run_dir} after epoch {epoch}" in stdout
        _finished_like(run_dir, reference_run)
