"""The README's first screen stays true: two set-up commands, and CI runs exactly the test one."""

from __future__ import annotations

import re

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
