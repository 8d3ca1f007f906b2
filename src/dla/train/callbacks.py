"""Optional behaviour of a training loop, as callbacks with named hooks instead of branches in the loop.

A loop (`dla.train.loop.Trainer`, `dla.text.lm_train.LMTrainer`) calls `engine.emit(hook, ...)` at fixed points;
every hook of `Callback` does nothing, so a callback overrides only the hooks it needs. The points, in the order
one optimizer step and one validation meet them:

    on_start(at, steps_done)         after a resume (or at the start): tracker open, weights final
    on_epoch_start(epoch)            image loops, before the epoch's first batch
    on_loss(step, loss)              the step's training loss, before backward (may raise TrainingDiverged)
    before_update(step, epoch)       after backward, before clipping and the optimizer step
    after_update(step)               after the optimizer step
    before_checkpoint(epoch)         before a mid-epoch checkpoint is written (may raise)
    on_epoch_end(epoch)              image loops, after the epoch's last batch, before validation
    on_validate(epoch, val)          may add metrics to `val` (TensorBoard / W&B log every one; metrics.csv
                                     keeps its fixed columns)
    stop_reason(epoch) -> str | None a message stops the loop after this epoch is logged

Built-in callbacks: gradient flow (`train.grad_flow_every`, here), the catastrophic-overfitting guard
(`train.adversarial.guard`, here), the divergence watch (`dla.train.loop.DivergenceWatch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from dla.distributed import broadcast_object
from dla.train.gradflow import GradFlowRecorder
from dla.train.guard import AdversarialGuard

if TYPE_CHECKING:
    from dla.train.engine import Engine


class Callback:
    """Every hook is a no-op: override the ones a behaviour needs."""

    def on_start(self, engine: Engine, at: int, steps_done: int) -> None: ...

    def on_epoch_start(self, engine: Engine, epoch: int) -> None: ...

    def on_loss(self, engine: Engine, step: int, loss: torch.Tensor) -> None: ...

    def before_update(self, engine: Engine, step: int, epoch: int) -> None: ...

    def after_update(self, engine: Engine, step: int) -> None: ...

    def before_checkpoint(self, engine: Engine, epoch: int) -> None: ...

    def on_epoch_end(self, engine: Engine, epoch: int) -> None: ...

    def on_validate(self, engine: Engine, epoch: int, val: dict[str, Any]) -> None: ...

    def stop_reason(self, engine: Engine, epoch: int) -> str | None:
        return None


class GradFlow(Callback):
    """`train.grad_flow_every`: gradient and update norms per layer into gradflow.csv (dla.train.gradflow)."""

    def __init__(self, engine: Engine, every: int) -> None:
        self.recorder = GradFlowRecorder(engine.model, every, engine.run.gradflow)

    def on_start(self, engine: Engine, at: int, steps_done: int) -> None:
        if engine.cfg.resume:  # rows the interrupted process wrote after its checkpoint come again
            self.recorder.drop_after(steps_done)

    def before_update(self, engine: Engine, step: int, epoch: int) -> None:
        self.recorder.before_step(step, epoch)

    def after_update(self, engine: Engine, step: int) -> None:
        self.recorder.after_step()


def gradflow_callbacks(engine: Engine) -> list[Callback]:
    """[GradFlow] when the config asks for it (`train.grad_flow_every`), on rank 0 only; else []."""
    every = engine.cfg.train.grad_flow_every
    return [GradFlow(engine, every)] if every and engine.dist.main else []


class OverfittingGuard(Callback):
    """`train.adversarial.guard`: PGD accuracy on fixed validation images after each epoch; at a collapse the
    weights of the last good epoch come back and training stops (dla.train.guard)."""

    def __init__(self, guard: AdversarialGuard) -> None:
        self.guard = guard

    def on_validate(self, engine: Engine, epoch: int, val: dict[str, Any]) -> None:
        val["robust_accuracy"] = self.guard.measure(engine.model, epoch)

    def stop_reason(self, engine: Engine, epoch: int) -> str | None:
        if not broadcast_object(self.guard.collapsed, engine.dist):
            return None
        engine.model.load_state_dict(self.guard.good_weights)  # neither checkpoint holds this epoch
        return self.guard.message(epoch)
