"""Training batches of sentences of similar length, so each batch is cut to a short longest sentence.

Random batches of sentences average about 27 tokens but are padded to their longest (about 50): half of
every attention and FFN product would be padding. Within chunks of `chunk` batches of a seeded permutation, the
sentences are sorted by length and cut into batches; the batch order is then shuffled. The order is still a
function of (seed, epoch) alone, so resume replays it, and every rank draws the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from dla.data.loader import TensorLoader


class LengthBucketLoader(TensorLoader):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, lengths: torch.Tensor,
                 chunk: int = 50, **kw) -> None:
        super().__init__(x, y, batch_size, shuffle=True, **kw)
        self.lengths, self.chunk = lengths.cpu(), chunk

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        g = self.generator()
        order = torch.randperm(len(self.y), generator=g)[: len(self) * self.batch_size]  # drop_last as the base
        bs, span = self.batch_size, self.batch_size * self.chunk
        batches: list[torch.Tensor] = []
        for c in range(0, len(order), span):
            part = order[c:c + span]
            part = part[torch.argsort(self.lengths[part], stable=True)]
            batches += [part[i:i + bs] for i in range(0, len(part), bs)]
        for b in torch.randperm(len(batches), generator=g).tolist():
            rows = batches[b][self.rank::self.world].to(self.x.device)
            if self.with_index:
                yield self.x[rows], self.y[rows], rows
            else:
                yield self.x[rows], self.y[rows]
