"""The training loop shared by the image labs, with early stopping, checkpoints and exact resume."""

from dla.train.loop import Trainer, run_experiment

__all__ = ["Trainer", "run_experiment"]
