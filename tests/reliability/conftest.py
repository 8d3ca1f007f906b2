"""Reliability suite: shared helpers and the proof table printed at the end of the run.

Every test here checks one or more *scenarios* of a guarantee through `proof.check(guarantee)`; fuzz tests
count each generated example. `pytest_terminal_summary` prints guarantee -> scenarios checked / passed, so a
run's output says how much evidence stands behind each line of the README's "Reliability guarantees" table.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from ..conftest import DATA_ROOT, QUICK

GUARANTEES = {
    "interruptions": "Interruptions (SIGINT / SIGTERM / kill -9, exact resume)",
    "numerical": "Numerical faults (NaN / inf loss)",
    "hostile": "Hostile files (pickle, YAML tags, corrupt data)",
    "paths": "Config paths stay under --out",
    "fuzz": "Fuzzing (config parser, CLI argv)",
    "resources": "Resource limits (disk full)",
    "load": "Load (parallel sweep, each point once)",
    "concurrency": "Two processes, one run folder (lock)",
    "inputs": "Hostile inputs (bombs, injection, run folders)",
}
_checked = dict.fromkeys(GUARANTEES, 0)
_passed = dict.fromkeys(GUARANTEES, 0)
_tests: dict[str, dict[str, int]] = {g: {"passed": 0, "failed": 0, "skipped": 0} for g in GUARANTEES}
_MODULES = {"test_interruptions": "interruptions", "test_numerical": "numerical", "test_hostile_files": "hostile",
            "test_paths": "paths", "test_fuzz": "fuzz", "test_disk_full": "resources", "test_load": "load",
            "test_concurrency": "concurrency", "test_hostile_inputs": "inputs"}

# A run that takes a few seconds: long enough epochs (40 steps) to be interrupted at a real moment. On the CPU,
# where a seeded run is bit-for-bit repeatable, so "resume gives the same numbers" can be checked exactly.
RUN = [*[q for q in QUICK if not q.startswith(("train.epochs", "data.limit_train", "data.batch_size"))],
       "data.limit_train=4500", "data.batch_size=100", "train.epochs=4", "tracking.tensorboard=false", "device=cpu"]


class Proof:
    """Counts scenarios per guarantee: `with proof.check("hostile"): ...` is one scenario checked, and passed
    when the block finishes without an exception."""

    @contextmanager
    def check(self, guarantee: str, n: int = 1) -> Iterator[None]:
        assert guarantee in GUARANTEES, guarantee
        _checked[guarantee] += n
        yield
        _passed[guarantee] += n


@pytest.fixture(scope="session")
def proof() -> Proof:
    return Proof()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    module = Path(report.nodeid.split("::", 1)[0]).stem
    guarantee = _MODULES.get(module)
    if guarantee is None:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _tests[guarantee][report.outcome] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not any(_checked.values()) and not any(sum(t.values()) for t in _tests.values()):
        return
    tr = terminalreporter
    tr.section("reliability guarantees: scenarios checked")
    width = max(len(v) for v in GUARANTEES.values())
    tr.write_line(f"{'guarantee':<{width}}  {'tests passed':>12}  {'failed':>6}  {'skipped':>7}  "
                  f"{'scenarios':>9}  {'held':>6}")
    for key, title in GUARANTEES.items():
        t = _tests[key]
        tr.write_line(f"{title:<{width}}  {t['passed']:>12}  {t['failed']:>6}  {t['skipped']:>7}  "
                      f"{_checked[key]:>9}  {_passed[key]:>6}")
    tr.write_line(f"{'total':<{width}}  {sum(t['passed'] for t in _tests.values()):>12}  "
                  f"{sum(t['failed'] for t in _tests.values()):>6}  {sum(t['skipped'] for t in _tests.values()):>7}  "
                  f"{sum(_checked.values()):>9}  {sum(_passed.values()):>6}")


# --------------------------------------------------------------------------------------------------
# The real command line in a child process


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "DLA_DATA": str(DATA_ROOT), "DLA_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    env.pop("DLA_FAULT_HANG_IN_CHECKPOINT", None)
    env.pop("DLA_FAULT_SIGNAL_AT_STEP", None)
    return {**env, **extra}


def _default_sigint() -> None:
    # A child of a background job inherits SIGINT ignored; a user's terminal delivers it. Act like the terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(argv: Sequence[str], cwd: Path, **env: str) -> subprocess.Popen[str]:
    """`dla ARGV` as a real process (stdout and stderr piped, text)."""
    return subprocess.Popen([sys.executable, "-m", "dla.cli", *argv], cwd=cwd, env=cli_env(**env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint)


def dla(argv: Sequence[str], cwd: Path, timeout: float = 240, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dla.cli", *argv], cwd=cwd, env=cli_env(**env), text=True,
                          capture_output=True, timeout=timeout, preexec_fn=_default_sigint)


def wait_for(proc: subprocess.Popen[str], ready, timeout: float = 120) -> None:
    """Poll until `ready()` (a condition on files the run writes) or fail if the process ends first."""
    done = threading.Event()
    timer = threading.Timer(timeout, lambda: (done.set(), proc.kill()))
    timer.start()
    try:
        while not ready():
            if proc.poll() is not None or done.is_set():
                out, err = proc.communicate()
                raise AssertionError(f"process ended (rc {proc.returncode}) before the moment came:\n{out}\n{err}")
            done.wait(0.005)
    finally:
        timer.cancel()


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = 120) -> str:
    """Read the child's stderr until a line holds `needle`; returns the lines read so far."""
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    seen = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if needle in line:
                return "".join(seen)
    finally:
        timer.cancel()
    raise AssertionError(f"no {needle!r} before the process ended (rc {proc.wait()}):\n{''.join(seen)}")


def error_line(stderr: str) -> str:
    """The single `dla: error:` line a failed command must print (and nothing else on stderr)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dla: error: "), stderr
    return lines[0]


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv without the wall-clock column: what an exact resume must reproduce."""
    import csv

    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(f)]


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> Iterator[None]:
    # The child processes run with OMP_NUM_THREADS=1; in-process runs use one thread too, so a run that is
    # resumed here and its reference compute every float in the same order (exact, not approximate, equality).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of RUN, never interrupted: what every resumed run must reproduce exactly, and the run
    folder the hostile-file tests copy and tamper with. Read-only for tests: copy it before changing it."""
    import shutil

    from ..conftest import train_run

    run = train_run(tmp_path_factory.mktemp("reference"), "mnist_mlp", [*RUN, "run_name=ref"])
    shutil.rmtree(run.path / "plots")
    return run.path
