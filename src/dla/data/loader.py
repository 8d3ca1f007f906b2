"""Batches of uint8 images held on the training device, with batched augmentation.

The whole dataset lives as one uint8 tensor on the device; an epoch is a seeded permutation sliced into
batches, and augmentation is tensor code over the batch. No per-sample Python runs in the hot loop, which
is where the textbook `Dataset` + `DataLoader` loop spends its time on small images (see BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from dla.config import AugmentConfig


class TensorLoader:
    """Iterate (x uint8 (B, C, H, W), y int64 (B,)) batches; the order depends on (seed, epoch) only.

    With `with_index` each batch also carries its rows' indices into the dataset, (B,) int64, for objectives
    that keep per-example state (cached teacher outputs).

    With `world` > 1 it is one rank's shard of a distributed run: every rank draws the same permutation and
    yields rows `rank::world` of each global batch of `batch_size`, so all ranks together see exactly the
    batches of a single process.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world: int = 1,
        with_index: bool = False,
    ) -> None:
        self.x, self.y = x.to(device), y.to(device)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world, self.with_index = rank, world, with_index
        # Dropping a ragged last batch only makes sense when there is more than one batch.
        self.drop_last = drop_last and len(self.y) > batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def generator(self) -> torch.Generator:
        """The epoch's shuffling RNG, a function of (seed, epoch) alone, so a resumed run replays its order."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = len(self.y)
        order = torch.randperm(n, generator=self.generator()).to(self.x.device) if self.shuffle else None
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, n)
            if order is None:  # in order: slices are views, no copy
                idx: torch.Tensor | slice = slice(lo + self.rank, hi, self.world)
            else:
                idx = order[lo:hi][self.rank::self.world]
            if self.with_index:
                rows = idx if isinstance(idx, torch.Tensor) else torch.arange(idx.start, hi, self.world,
                                                                              device=self.x.device)
                yield self.x[idx], self.y[idx], rows
            else:
                yield self.x[idx], self.y[idx]


def augment(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator, *, rank: int = 0,
            world: int = 1) -> torch.Tensor:
    """Random flip and padded random crop over a (B, C, H, W) batch; random draws come from `g` (CPU).

    For one rank's shard (rows `rank::world` of a global batch of B * world) the draws are made for the
    whole global batch and the shard's rows are used, so every rank augments its rows exactly as a single
    process would.
    """
    if not (cfg.flip or cfg.crop_padding):
        return x
    b, _, h, w = x.shape
    mine = slice(rank, b * world, world)  # this shard's rows within the global batch's draws
    if cfg.flip:
        flip = (torch.rand(b * world, generator=g)[mine] < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if cfg.crop_padding:
        p = cfg.crop_padding
        padded = F.pad(x, (p, p, p, p))  # (B, C, H + 2p, W + 2p), zeros outside
        dy = torch.randint(0, 2 * p + 1, (b * world,), generator=g)[mine].to(x.device)
        dx = torch.randint(0, 2 * p + 1, (b * world,), generator=g)[mine].to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]  # (B, C, H, W)
    return x
