"""Early stopping on one validation metric, with patience; its state is saved in checkpoints."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from dla.config import EarlyStoppingConfig


@dataclass
class EarlyStopping:
    cfg: EarlyStoppingConfig
    best: float = math.nan
    best_epoch: int = -1
    bad_epochs: int = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; True when it is a new best."""
        sign = 1.0 if self.cfg.mode == "max" else -1.0
        improved = math.isnan(self.best) or sign * (value - self.best) > self.cfg.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.cfg.patience > 0 and self.bad_epochs >= self.cfg.patience

    def state_dict(self) -> dict[str, float | int]:
        return {k: v for k, v in asdict(self).items() if k != "cfg"}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.best, self.best_epoch, self.bad_epochs = float(state["best"]), int(state["best_epoch"]), \
            int(state["bad_epochs"])
