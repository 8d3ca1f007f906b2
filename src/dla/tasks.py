"""One entry point for `dla run` and `dla sweep`: the config's `task` picks the runner.

Every runner takes (config, parent folder, data root), creates `<parent>/<run>/` only when the run can really
start, and writes `results.json` last (with `test` metrics), so sweeps, `dla show` and reports treat all
tasks alike.
"""

from __future__ import annotations

from pathlib import Path

from dla.config import ExperimentConfig
from dla.runs import RunDir, held_run_locks, release_run_locks


def run_experiment(cfg: ExperimentConfig, parent: Path, data_root: Path) -> RunDir:
    """Run `cfg` under `parent`; the run folder's lock (taken when the folder is opened) is let go at the end,
    so the next point of an in-process sweep, or a later run in this process, can take its own."""
    before = held_run_locks()
    try:
        return _run(cfg, parent, data_root)
    finally:
        release_run_locks(keep=before)


def _run(cfg: ExperimentConfig, parent: Path, data_root: Path) -> RunDir:
    if cfg.task == "lm":
        from dla.text.lm_train import run_lm

        return run_lm(cfg, parent, data_root)
    if cfg.task == "textcls":
        from dla.text.textcls import run_textcls

        return run_textcls(cfg, parent, data_root)
    from dla.train.loop import run_experiment as run_classifier

    return run_classifier(cfg, parent, data_root)
