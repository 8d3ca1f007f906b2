"""The library's evaluation packages import without the training loop, matplotlib or tracking: a script that
attacks or scores a model pays for what it uses (each checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("dla.train.loop", "dla.tracking", "dla.report.plots", "matplotlib", "torch.utils.tensorboard")


@pytest.mark.parametrize("package", ["dla.attacks", "dla.ood", "dla.explain", "dla.models", "dla.data", "dla.config"])
def test_importing_a_package_loads_nothing_heavy(package: str) -> None:
    code = f"import sys, {package}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "", f"import {package} loaded {out.strip()}"


def test_the_loop_is_still_reachable_from_the_package() -> None:
    from dla.train import Trainer, run_experiment
    from dla.train.loop import Trainer as T
    from dla.train.loop import run_experiment as r

    assert (Trainer, run_experiment) == (T, r)
    with pytest.raises(AttributeError, match="no attribute 'fit'"):
        import dla.train

        dla.train.fit  # noqa: B018


def test_the_command_line_parser_loads_only_itself() -> None:
    # `dla --help` and a mistyped option answer at once: building the parser imports no torch, no library module
    # outside dla.cli (each handler imports what it calls) and nothing heavy.
    code = ("import sys, dla.cli; dla.cli.build_parser(); "
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('dla', 'torch', 'numpy', "
            f"'matplotlib') and not m.startswith('dla.cli') or m in {HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "dla,dla.errors", f"building the dla parser loaded {out.strip()}"
