"""A finished run, rebuilt from what it saved: the commands that evaluate a trained model (`dla explain`,
`dla attack`) start here.

config.yaml says which data and model; the splits are re-derived from the same seed and files (so the test
split is the run's own); checkpoints/best.pt holds the weights. Every way a folder can fail to be a usable run
is one `RunDirError` / `CheckpointError` line that says what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dla.config import ExperimentConfig
from dla.data import Splits
from dla.errors import CheckpointError, DlaError, RunDirError


@dataclass
class TrainedRun:
    path: Path
    cfg: ExperimentConfig
    model: nn.Module  # best weights, eval mode, on the CPU
    splits: Splits  # the run's own splits; `test` is what its results.json was measured on

    @property
    def test_x(self) -> torch.Tensor:  # (N, C, H, W) uint8
        return self.splits.test.x

    @property
    def test_y(self) -> torch.Tensor:  # (N,) int64
        return self.splits.test.y

    @property
    def classes(self) -> list[str]:
        return self.splits.classes


def load_trained(run_dir: Path, data_root: Path) -> TrainedRun:
    """The run in `run_dir` with its best weights and its test split (see the module docstring)."""
    from dla.config import load_config
    from dla.data import load_splits
    from dla.models import ModelInputs, build_model
    from dla.train.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a folder; pass a run folder written by `dla run`, such as "
                          "runs/cnn_fmnist/<run>")
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{run_dir} has no config.yaml; is it a run folder written by `dla run`? (a sweep's "
                          "runs are its subfolders)")
    best = run_dir / "checkpoints" / "best.pt"
    if not best.is_file():
        raise RunDirError(f"run {run_dir} is incomplete (no checkpoints/best.pt): it stopped before its first "
                          "epoch ended; resume it with `dla run EXPERIMENT resume=true run_name=NAME`")
    cfg = load_config(str(run_dir / "config.yaml"))
    if cfg.task != "classify":
        raise RunDirError(f"{run_dir} is a task={cfg.task} run; this command works on image classifiers "
                          "(task=classify)" + ("; sample from it with `dla generate RUN_DIR`" if cfg.task == "lm"
                                               else ""))
    splits = load_splits(cfg.data, data_root, cfg.seed)
    model = build_model(cfg.model, ModelInputs(splits.input_shape, len(splits.classes), splits.mean, splits.std))
    state = load_checkpoint(best)
    if state.get("model_name") not in (None, cfg.model.name):
        raise CheckpointError(f"{best} holds a {state.get('model_name')!r} model but config.yaml says "
                              f"{cfg.model.name!r}; the run folder was mixed up")
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{best} does not fit the model in config.yaml ({first[:160]})") from None
    return TrainedRun(run_dir, cfg, model.eval(), splits)


def parse_class(value: int | str, classes: Sequence[str], option: str = "target",
                error: type[DlaError] = DlaError) -> int:
    """A class index or a class name (case-insensitive) -> index, checked against the run's classes.

    `option` names the option in the messages; `error` is the caller's error type (ExplainError, AttackError).
    """
    k = len(classes)
    listing = ", ".join(f"{i}={c}" for i, c in enumerate(classes)) if k <= 20 else f"0 to {k - 1}"
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        names = {c.lower(): i for i, c in enumerate(classes)}
        if value.strip().lower() not in names:
            raise error(f"unknown {option} class {value!r}; this run's classes: {listing}")
        return names[value.strip().lower()]
    index = int(value)
    if not 0 <= index < k:
        raise error(f"{option} {index} is out of range: this run has {k} classes ({listing})")
    return index
