"""What every task's training loop shares: the engine under `Trainer` (images, text classification) and
`LMTrainer` (language models).

Each loop keeps only its algorithm (`fit`, `train_step`, its own evaluation). Everything around it exists once,
here: the DDP / compile wrapper, the interrupt clock (`dla.train.interrupt`), the clean-up of half-written
checkpoints, the per-rank seed, the tracker, checkpoint writing and the identity check on resume, and the
callbacks (`dla.train.callbacks`) that optional behaviour hangs on.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dla.config import ExperimentConfig, to_dict
from dla.distributed import SINGLE, Dist, all_reduce_sum, broadcast_object
from dla.errors import DlaError
from dla.runs import RunDir
from dla.runtime import autocast
from dla.tracking import NullTracker, Tracker
from dla.train.callbacks import Callback
from dla.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from dla.train.interrupt import StepClock


class Engine:
    """Built by a loop's `__init__` with `setup`, after its optimizer exists and before it restores."""

    cfg: ExperimentConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    run: RunDir
    dist: Dist = SINGLE
    device: torch.device
    callbacks: list[Callback]

    def setup(self, model: nn.Module, run: RunDir, dist: Dist, device: torch.device) -> None:
        """The forward wrapper, the clock, and a clean checkpoint folder. Then the loop restores (resume=true)
        and calls `start`."""
        self.forward: nn.Module = model
        if dist.active:
            from torch.nn.parallel import DistributedDataParallel

            self.forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if self.cfg.train.compile:
            self.forward = torch.compile(self.forward)
        self.position = ""  # where last.pt stands, for messages
        self.clock = StepClock(self.cfg.train.checkpoint_every_s, dist, device)
        if dist.main:  # temp files of a process killed mid-write (kill -9) never became checkpoints
            for stale in run.checkpoints.glob(".*.tmp"):
                stale.unlink(missing_ok=True)

    def start(self, at: int, steps_done: int, seed_offset: int = 0) -> None:
        """After the restore: the per-rank dropout seed, the tracker from epoch / step `at`, the callbacks
        (`steps_done`: optimizer steps already taken)."""
        if self.dist.rank:  # dropout masks differ across ranks; rank 0 keeps the single-process stream
            torch.manual_seed(self.cfg.seed * 7919 + self.dist.rank * 104_729 + at + seed_offset)
        self.tracker = Tracker(self.run.path, self.cfg.tracking, to_dict(self.cfg), at, self.run.path.name) \
            if self.dist.main else NullTracker()
        for cb in self.callbacks:
            cb.on_start(self, at, steps_done)

    # --- callbacks ----------------------------------------------------------------------------------
    def emit(self, hook: str, *args: Any) -> None:
        """Call `hook` on every callback, in order."""
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    # --- checkpoints --------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """What must match to resume from a checkpoint."""
        return {"experiment": self.cfg.experiment, "model_name": self.cfg.model.name}

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def write_checkpoint(self, path: Path, at: int, extra: dict[str, Any]) -> None:
        """Rank 0 writes `at` (epochs or steps done, under the key every dla checkpoint has), the identity, the
        model, optimizer and RNG states, and the loop's own `extra` state; atomically (dla.train.checkpoint)."""
        if self.dist.main:
            save_checkpoint(path, {"epoch": at, **self.identity(), "model": self.model_state(),
                                   "optimizer": self.optimizer.state_dict(), "rng": rng_state(), **extra})

    def read_checkpoint(self, path: Path) -> dict[str, Any]:
        """Rank 0 reads `path` and hands it to the others (no shared filesystem needed, any world size); the
        model, optimizer and RNG states are restored, the rest is the loop's to use."""
        state = broadcast_object(load_checkpoint(path) if self.dist.main else None, self.dist)
        if any(state.get(k) != v for k, v in self.identity().items()):
            theirs = ", ".join(f"{k} {state.get(k)!r}" for k in self.identity())
            raise DlaError(f"cannot resume from {path}: it belongs to {theirs}")
        self.load_model_state(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        return state

    # --- small shared helpers -----------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.cfg.train.amp, self.cfg.train.amp_cpu)

    def clip_gradients(self) -> None:
        if self.cfg.train.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)

    def reduce(self, packed: torch.Tensor) -> torch.Tensor:
        """Sum per-rank counts (on the device the backend wants: NCCL reduces CUDA tensors)."""
        if not self.dist.active:
            return packed
        on = self.device if self.device.type == "cuda" else torch.device("cpu")
        return all_reduce_sum(packed.to(on), self.dist).cpu()

    def say(self, text: str) -> None:
        if self.dist.main:
            print(text, flush=True)
