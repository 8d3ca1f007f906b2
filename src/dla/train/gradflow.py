"""Gradient flow: why residual connections work, measured.

Every `every` optimizer steps the recorder writes, for each weight matrix / conv kernel on the main path
(shortcut projections left out, so plain and residual nets line up layer by layer):
- the gradient norm ||dL/dW|| (before clipping), which vanishes towards the input of a deep plain net;
- the weight norm ||W||, and the update/weight ratio ||W_after - W_before|| / ||W_before||, how fast the
  layer actually moves (about 1e-3 is the usual healthy value).
Rows go to `gradflow.csv` in the run folder; `dla.report.gradflow` turns them into plots.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import nn

FIELDS = ["step", "epoch", "layer", "name", "grad_norm", "weight_norm", "update_ratio"]


def tracked_weights(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Main-path weights with at least 2 dimensions (linear and conv), input to output."""
    return [(name, p) for name, p in model.named_parameters()
            if p.requires_grad and p.dim() >= 2 and ".shortcut." not in name]


class GradFlowRecorder:
    def __init__(self, model: nn.Module, every: int, path: Path) -> None:
        self.weights = tracked_weights(model)
        self.every, self.path = every, path
        self._pending: tuple[int, int, list[float], list[torch.Tensor]] | None = None
        if not path.is_file():
            with path.open("w", newline="") as f:
                csv.writer(f).writerow(FIELDS)

    def drop_after(self, step: int) -> None:
        """Resuming from a checkpoint taken after `step`: rows of later steps come again, so they go."""
        with self.path.open(newline="") as f:
            rows = list(csv.reader(f))
        kept = [r for r in rows[1:] if r and int(r[0]) <= step]
        if len(kept) == len(rows) - 1:
            return
        import io

        from dla.io import atomic_write

        text = io.StringIO(newline="")
        csv.writer(text).writerows([rows[0], *kept])
        with atomic_write(self.path) as f:
            f.write(text.getvalue().encode())

    @torch.no_grad()
    def before_step(self, step: int, epoch: int) -> None:
        """Call after backward, before clipping and the optimizer step."""
        if step % self.every:
            return
        grads = [p.grad.norm() if p.grad is not None else torch.zeros((), device=p.device) for _, p in self.weights]
        self._pending = (step, epoch, torch.stack(grads).float().cpu().tolist(),
                         [p.detach().clone() for _, p in self.weights])

    @torch.no_grad()
    def after_step(self) -> None:
        """Call after the optimizer step: the update is the difference to the snapshot."""
        if self._pending is None:
            return
        step, epoch, grads, before = self._pending
        self._pending = None
        norms = torch.stack([w.float().norm() for w in before])
        moved = torch.stack([(p.detach() - w).float().norm() for (_, p), w in zip(self.weights, before, strict=True)])
        ratios = (moved / norms.clamp_min(1e-12)).cpu().tolist()
        with self.path.open("a", newline="") as f:
            w = csv.writer(f)
            for i, ((name, _), g, n, r) in enumerate(zip(self.weights, grads, norms.cpu().tolist(), ratios,
                                                         strict=True)):
                w.writerow([step, epoch, i, name, f"{g:.6g}", f"{n:.6g}", f"{r:.6g}"])
