"""Bits per character: a language model's loss on one scale whatever its tokens (characters, BPE, words).

A loss per token is not comparable across tokenizers: a word token carries several characters. The total
information is: bpc = (total nats over the split) / (characters of the split in the original text) / ln 2.
`split_nats` measures that total on the whole validation text, every token predicted exactly once.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

LN2 = math.log(2)


def bits_per_character(total_nats: float, characters: int) -> float:
    return total_nats / characters / LN2


def estimate_bpc(loss_per_token: float, tokens: int, characters: int) -> float:
    """A mean loss per token (e.g. over random blocks) in bits per character: the split's total, estimated."""
    return bits_per_character(loss_per_token * tokens, characters)


@torch.no_grad()
def split_nats(model: torch.nn.Module, ids: torch.Tensor, block_size: int, batch_size: int, device: torch.device,
               context: torch.Tensor | None = None,
               autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> float:
    """Sum over every token of `ids` of -ln p(token | up to block_size previous tokens), in nats.

    Non-overlapping windows: each token is predicted once. `context` (e.g. the training text's last token) is
    prepended so that the first token of `ids` is predicted too; without it the first token is not scored.
    """
    seq = ids if context is None else torch.cat([context[-1:], ids])
    inputs, targets = seq[:-1], seq[1:]
    n = len(targets)
    total = 0.0
    was_training = model.training
    model.eval()
    starts = list(range(0, n, block_size))
    full = [s for s in starts if s + block_size <= n]
    for i in range(0, len(full), batch_size):  # whole windows in batches, then the short last one alone
        idx = torch.tensor(full[i:i + batch_size]).unsqueeze(1) + torch.arange(block_size)
        total += _nats(model, inputs[idx], targets[idx], device, autocast)
    if starts and starts[-1] + block_size > n:
        s = starts[-1]
        total += _nats(model, inputs[s:].unsqueeze(0), targets[s:].unsqueeze(0), device, autocast)
    model.train(was_training)
    return total


def _nats(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
          autocast: Callable[[], contextlib.AbstractContextManager]) -> float:
    with autocast():
        logits = model(x.to(device))
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.to(device).reshape(-1),
                           reduction="sum").item()
