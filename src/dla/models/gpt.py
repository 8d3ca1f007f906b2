"""A decoder-only transformer (GPT), written to be read top to bottom.

    token ids (B, T)
      -> token embedding + learned position embedding + dropout       (B, T, C)
      -> n_layer pre-LayerNorm blocks: x + Attn(LN(x)), then x + MLP(LN(x))
      -> LayerNorm -> linear head, its weight tied to the token embedding   (B, T, V)

Attention is causal `F.scaled_dot_product_attention` (a fused kernel on CPU and GPU). With a `KVCache` the
model runs incrementally: each call appends the new tokens' keys and values to the cache and attends to
everything cached so far, so generating one token costs one token's forward pass instead of the whole
context's. Positions are learned and absolute, so a sequence never exceeds `block_size` tokens; what to do
when the context is full is the generator's business (dla.text.generate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dla.config import ModelConfig, opt
from dla.errors import ConfigError
from dla.models.registry import TextInputs, register_model


@dataclass
class GPTConfig(ModelConfig):
    name: str = opt("gpt", "model from the registry")
    n_layer: int = opt(4, "transformer blocks", ge=1, le=256)
    n_head: int = opt(4, "attention heads; must divide n_embd", ge=1, le=256)
    n_embd: int = opt(128, "embedding width C", ge=1, le=16384)
    dropout: float = opt(0.0, "dropout on the embeddings, the attention weights and each residual branch", ge=0, lt=1)
    bias: bool = opt(True, "biases in the linear layers and LayerNorms")


class KVCache:
    """Keys and values of every layer for the tokens seen so far: (B, n_head, block_size, head_size) each."""

    def __init__(self, n_layer: int, batch: int, n_head: int, block_size: int, head_size: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        shape = (batch, n_head, block_size, head_size)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.pos = 0  # tokens cached so far
        self.capacity = block_size

    def reset(self) -> None:
        self.pos = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # the three projections in one matmul
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs): heads become a batch dimension
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            # Under CPU bf16 autocast the linear layers gain (2x on AVX512-BF16), but PyTorch's bf16 flash
            # attention backward on CPU is ~5x slower than its fp32 one: attention itself runs in fp32.
            with torch.autocast("cpu", enabled=False):
                y = self.attend(q.float(), k.float(), v.float(), cache, layer).to(q.dtype)
        else:
            y = self.attend(q, k, v, cache, layer)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_drop(self.proj(y))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCache | None,
               layer: int) -> torch.Tensor:
        """(B, nh, T, hs) queries, keys, values of the new tokens -> (B, nh, T, hs)."""
        T = q.shape[2]
        if cache is None:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                                  is_causal=True)
        start = cache.pos
        cache.k[layer][:, :, start:start + T] = k
        cache.v[layer][:, :, start:start + T] = v
        k, v = cache.k[layer][:, :, :start + T], cache.v[layer][:, :, :start + T]  # (B, nh, start + T, hs)
        if T == 1:  # one new token sees every cached one: no mask needed
            return F.scaled_dot_product_attention(q, k, v)
        # query i (absolute position start + i) sees keys 0 .. start + i
        mask = torch.ones(T, start + T, dtype=torch.bool, device=q.device).tril(diagonal=start)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig, vocab_size: int, block_size: int) -> None:
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ConfigError(f"model.n_head={cfg.n_head} must divide model.n_embd={cfg.n_embd}")
        self.cfg, self.vocab_size, self.block_size = cfg, vocab_size, block_size
        self.tok_emb = nn.Embedding(vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.head = nn.Linear(cfg.n_embd, vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying (Press & Wolf 2017): one V x C matrix, not two
        self.apply(self._init)
        # GPT-2's scaled init: each residual branch's last projection shrinks with depth, so the residual
        # stream's variance does not grow with n_layer.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Token ids (B, T) -> next-token logits (B, T, V). With a cache, `idx` continues the cached tokens."""
        T = idx.shape[1]
        start = cache.pos if cache is not None else 0
        if start + T > self.block_size:
            raise ValueError(f"sequence of {start + T} tokens is longer than block_size={self.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.pos += T
        return self.head(self.ln_f(x))  # (B, T, V)

    def new_cache(self, batch: int) -> KVCache:
        p = self.tok_emb.weight
        return KVCache(self.cfg.n_layer, batch, self.cfg.n_head, self.block_size,
                       self.cfg.n_embd // self.cfg.n_head, p.device, p.dtype)


@register_model("gpt", GPTConfig, "decoder-only transformer (GPT): pre-LN blocks, causal SDPA, tied embeddings, "
                                  "KV cache", modality="text")
def build_gpt(cfg: GPTConfig, inputs: TextInputs) -> nn.Module:
    return GPT(cfg, inputs.vocab_size, inputs.block_size)
