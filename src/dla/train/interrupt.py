"""Checkpoints inside an epoch: every `train.checkpoint_every_s` seconds, and when SIGINT or SIGTERM arrives.

A text fine-tuning epoch on a laptop CPU takes a quarter of an hour; without this a Ctrl-C, a scheduler's
SIGTERM or a power cut loses the epoch in flight. `StepClock.poll()` is asked once per optimizer step, after
the update: it answers whether to write a mid-epoch checkpoint now (time's up, or a signal asked to stop) and
whether to stop after writing it. The loops (`dla.train.loop.Trainer`, `dla.text.lm_train.LMTrainer`) save what
they need to replay the rest of the epoch exactly: the batches done, the epoch's augmentation RNG, the partial
training metrics, every global RNG.

Signals. Inside the batch loop (`armed`) the first SIGINT / SIGTERM only raises a flag: the step in flight ends,
its checkpoint is written, then the process stops as the signal asks (KeyboardInterrupt for SIGINT, exit
128 + 15 for SIGTERM, as `dla.cli` does). Outside it (evaluation, an epoch-end checkpoint), or on a second
signal, the process stops at once, as before. A SIGINT that the shell set to ignored (a `nohup` or `&` job)
stays ignored.

Under torchrun every rank polls: one all-reduce of two numbers per step, so all ranks stop, or checkpoint, at
the same step (rank 0's clock decides the timed ones; a signal on any rank stops all of them).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

import torch

from dla.distributed import SINGLE, Dist, all_reduce_sum

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_now(signum: int) -> None:
    """Stop the process the way `dla` stops on this signal without a checkpoint to write."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


class StepClock:
    def __init__(self, every_s: float, dist: Dist = SINGLE, device: torch.device | None = None) -> None:
        self.every_s, self.dist = every_s, dist
        self.device = device if device is not None and device.type == "cuda" else torch.device("cpu")
        self.signum = 0  # the signal received while armed; 0 = none
        self.armed = False
        self.last = time.monotonic()
        self.polls = 0
        # Fault injection for tests/reliability, inert unless set: DLA_FAULT_SIGNAL_AT_STEP=60:INT sends this
        # process SIGINT (TERM, KILL) from inside this clock's 60th poll, i.e. right after the run's 60th
        # optimizer step in this process, so a test's interrupt lands at a known batch.
        self.fault = os.environ.get("DLA_FAULT_SIGNAL_AT_STEP", "")

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.armed or self.signum:
            stop_now(signum)
        self.signum = signum

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Own SIGINT and SIGTERM for the duration (main thread only; other threads cannot take signals)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.getsignal(s) for s in _SIGNALS}
        for s in _SIGNALS:
            if old[s] is not signal.SIG_IGN:
                signal.signal(s, self._handle)
        try:
            yield
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    @contextlib.contextmanager
    def arm(self) -> Iterator[None]:
        """The batch loop: a signal now waits for the end of the step and its checkpoint."""
        self.armed = True
        try:
            yield
        finally:
            self.armed = False

    def poll(self) -> tuple[bool, bool]:
        """(checkpoint now, then stop): asked once per step, after the optimizer's update."""
        if self.fault:
            self._maybe_signal()
        due = self.every_s > 0 and time.monotonic() - self.last >= self.every_s and self.dist.main
        stop = bool(self.signum)
        if self.dist.active:  # every rank decides alike
            flags = all_reduce_sum(torch.tensor([float(stop), float(due)], device=self.device), self.dist).cpu()
            stop, due = bool(flags[0] > 0), bool(flags[1] > 0)
        return stop or due, stop

    def _maybe_signal(self) -> None:
        self.polls += 1
        at, _, name = self.fault.partition(":")
        if self.polls == int(at):
            os.kill(os.getpid(), getattr(signal, f"SIG{name or 'INT'}"))

    def saved(self) -> None:
        self.last = time.monotonic()

    def stop(self) -> None:
        """After the stop checkpoint is written: end the process as the signal asked (SIGTERM on a rank that
        received none: its peers stopped)."""
        stop_now(self.signum or signal.SIGTERM)

