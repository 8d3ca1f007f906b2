"""Sampling from a trained language model (GPT, LLaMA-style, fine-tuned Hugging Face): temperature, top-k,
top-p, a seeded generator, with or without a KV cache.

The model has learned positions 0 .. block_size - 1 only, so a long generation cannot keep every token in
its context. Both paths here follow the same rule: when the context is full, keep its last half and go on.
Without a cache every new token costs a forward pass over the whole context; with one it costs one token's
pass, plus a re-fill of the kept half each time the context is full (every block_size / 2 tokens). Because
the contexts are identical, the two paths give the same text (up to float rounding in the logits), and
`tokens_per_second` compares like with like.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F


class Cache(Protocol):
    pos: int  # tokens cached so far

    def reset(self) -> None: ...


class CausalLM(Protocol):
    """What `generate` needs of a model: its context length, a fresh cache, and (B, T) ids -> (B, T, V) logits
    that continue the cached tokens when given a cache."""

    block_size: int

    def new_cache(self, batch: int) -> Cache: ...

    def eval(self) -> Any: ...

    def __call__(self, idx: torch.Tensor, cache: Any = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8  # 0 = greedy (argmax)
    top_k: int = 50  # 0 = no top-k cut
    top_p: float = 1.0  # 1 = no nucleus cut


def next_token(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) logits of the last position -> (B, 1) sampled ids."""
    if sampling.temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / sampling.temperature
    if 0 < sampling.top_k < logits.shape[-1]:
        kth = torch.topk(logits, sampling.top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already hold top_p; the most likely one always stays.
        drop_sorted = (cum - sorted_logits.softmax(dim=-1)) >= sampling.top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).to(logits.device)


@dataclass
class Generation:
    ids: torch.Tensor  # (B, T0 + new) prompt and generated ids
    new_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens * self.ids.shape[0] / max(self.seconds, 1e-9)


@torch.no_grad()
def generate(model: CausalLM, prompt: torch.Tensor, max_new_tokens: int, sampling: Sampling = Sampling(),
             seed: int | None = None, use_cache: bool = True) -> Generation:
    """Continue `prompt` (B, T0) by `max_new_tokens` tokens."""
    model.eval()
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    block, keep = model.block_size, max(model.block_size // 2, 1)
    ids = prompt
    cache = model.new_cache(ids.shape[0]) if use_cache else None
    start = max(ids.shape[1] - block, 0)  # first token of the current context (a long prompt: its end)
    fed = start  # with a cache: tokens of `ids` up to here are in it
    t0 = time.perf_counter()
    for _ in range(max_new_tokens):
        if ids.shape[1] - start >= block:  # the context is full: keep its last half
            start = ids.shape[1] - keep
            if cache is not None:
                cache.reset()
                fed = start
        if cache is None:
            logits = model(ids[:, start:])  # (B, T, V): the whole context, every step
        else:
            logits = model(ids[:, fed:], cache)  # only the tokens the cache has not seen
            fed = ids.shape[1]
        ids = torch.cat([ids, next_token(logits[:, -1], sampling, generator)], dim=1)
    return Generation(ids, max_new_tokens, time.perf_counter() - t0)
