"""The training loop shared by the image labs, with early stopping, checkpoints and exact resume.

`Trainer` and `run_experiment` are imported on first use (PEP 562), so that code needing only a piece of this
package (the attacks need `dla.train.metrics`) does not load the loop, its plots and its tracking.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Trainer", "run_experiment"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dla.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'dla.train' has no attribute {name!r}")
