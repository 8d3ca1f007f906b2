"""The README's first screen stays true: two set-up commands, and CI runs exactly the test one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from dla.config import experiment_names

from .conftest import REPO


def _first_block() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README needs a bash block with the two set-up commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_first_screen_has_the_two_commands() -> None:
    head = (REPO / "README.md").read_text().splitlines()[:40]
    run_cmd, test_cmd = _first_block()
    assert any(run_cmd in line for line in head) and any(test_cmd in line for line in head)
    assert "pip install -e ." in run_cmd and run_cmd.endswith("dla run mnist_mlp")
    assert 'pip install -e ".[test]"' in test_cmd and "pytest" in test_cmd


def test_ci_runs_the_readme_test_command() -> None:
    _, test_cmd = _first_block()
    ci = (REPO / ".ci" / "run").read_text()
    steps = [s.strip() for s in test_cmd.split("&&")]
    installs = [s for s in steps if s.startswith("pip install")]
    assert installs and steps[-1].startswith("python -m pytest")
    for step in [*(s.replace("pip install", "pip install -q", 1) for s in installs), steps[-1]]:
        assert f"\n{step}\n" in ci, f"CI does not run the README's `{step}`"


def test_readme_lists_every_experiment() -> None:
    text = (REPO / "README.md").read_text()
    for name in experiment_names():
        assert name in text, f"experiment {name} is not in the README"


def _child_pytest(tmp_path: Path, data_root: Path, *args: str) -> str:
    env = {**os.environ, "DLA_DATA": str(data_root), "PYTHONPATH": os.pathsep.join(
        [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--basetemp",
                           str(tmp_path / f"t{len(list(tmp_path.iterdir()))}"), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc.stdout


def test_without_a_data_root_the_data_tests_skip_and_say_what_is_missing(tmp_path: Path) -> None:
    # The README's test command on a fresh machine, offline, with an empty data root: nothing fails, each test
    # that needs files from the root is a `data` test and skips naming them, and `-m "not data"` leaves them out.
    empty = tmp_path / "empty"
    empty.mkdir()
    files = ["tests/test_sweep.py", "tests/text/test_rotten.py"]
    out = _child_pytest(tmp_path, empty, *files)
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert re.search(r"\b\d+ passed, \d+ skipped\b", out) and "failed" not in out, out[-2000:]
    assert skips and all(f"under the data root {empty}" in line for line in skips), skips
    assert any("needs mnist" in line for line in skips) and any("needs rotten_tomatoes" in line for line in skips)
    out = _child_pytest(tmp_path, empty, "-m", "not data", *files)
    assert re.search(r"\b\d+ passed, \d+ deselected\b", out) and "skipped" not in out, out[-2000:]
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'"data: ', pyproject) and '-m "not data"' in (REPO / "README.md").read_text()
