"""The data root is made absolute where it is read, so a relative `DLA_DATA=../shared/data` (the README's own
advice) names one folder for every consumer: loaders, links and copies made in temporary folders, subprocesses,
sweep workers and torchrun ranks that start in another directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dla.data import resolve_data_root

from ..conftest import DATA_ROOT, REPO, needs_mnist


def test_a_relative_dla_data_is_resolved_against_the_working_directory_once(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "wt").mkdir()
    monkeypatch.chdir(tmp_path / "wt")
    monkeypatch.setenv("DLA_DATA", "../shared/data")
    root = resolve_data_root()
    assert root.is_absolute() and root == (tmp_path / "shared" / "data").resolve()
    monkeypatch.chdir(tmp_path)  # read once: moving elsewhere afterwards does not move the root
    assert root.is_dir()


def test_the_flag_and_the_default_are_absolute_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLA_DATA", "elsewhere")
    assert resolve_data_root("mine") == tmp_path.resolve() / "mine"  # --data-root wins over DLA_DATA
    assert resolve_data_root() == tmp_path.resolve() / "elsewhere"
    monkeypatch.delenv("DLA_DATA")
    assert resolve_data_root() == tmp_path.resolve() / "data"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_root("~/d") == tmp_path.resolve() / "d"


def test_the_suite_sees_an_absolute_data_root() -> None:
    assert DATA_ROOT.is_absolute()
    if os.environ.get("DLA_DATA"):  # what the code under test reads, even after a test changes directory
        assert os.environ["DLA_DATA"] == str(DATA_ROOT)


@needs_mnist
def test_data_tests_pass_with_a_relative_data_root(tmp_path: Path) -> None:
    # The tests that link or copy MNIST's files into a temporary folder: with a relative root their links pointed
    # nowhere. Run them in a child pytest started in the repository, with the root given relative to it.
    rel = os.path.relpath(DATA_ROOT, REPO)
    assert not Path(rel).is_absolute()
    env = {**os.environ, "DLA_DATA": rel, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *filter(None, [
        os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
                           str(tmp_path / "t"), "tests/data/test_datasets.py", "-k",
                           "torchvision_layout or corrupted_mnist_copy"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert re.search(r"\b2 passed\b", proc.stdout) and "skipped" not in proc.stdout, proc.stdout[-2000:]
