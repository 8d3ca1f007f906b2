"""A LLaMA-style decoder (Touvron et al. 2023) beside the GPT: the same interface, three changes inside.

    token ids (B, T)
      -> token embedding + dropout (no position embedding)                        (B, T, C)
      -> n_layer pre-norm blocks: x + Attn(RMSNorm(x)), then x + SwiGLU(RMSNorm(x))
      -> RMSNorm -> linear head                                                   (B, T, V)

RMSNorm scales by the root mean square only (no mean, no bias). Positions enter through rotary embeddings of
the queries and keys (dla.models.rope), not an added vector. The MLP is SwiGLU: down(silu(gate(x)) * up(x)),
its hidden width 8/3 C (rounded up to a multiple of 32) so it costs what a 4C GELU MLP costs. With
`n_kv_head` < `n_head` (grouped-query attention) several query heads share one key/value head, and the KV cache
shrinks by n_head / n_kv_head. The cache holds keys already rotated at their absolute positions; new tokens
are rotated at cache.pos onward, so incremental decoding matches the full forward. `generate()` drives it
exactly as it drives the GPT (`block_size`, `new_cache`, `forward(idx, cache)`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dla.config import ModelConfig, opt
from dla.errors import ConfigError
from dla.models.gpt import KVCache
from dla.models.registry import TextInputs, register_model
from dla.models.rope import apply_rope, rope_angles


@dataclass
class LlamaConfig(ModelConfig):
    name: str = opt("llama", "model from the registry")
    n_layer: int = opt(4, "transformer blocks", ge=1, le=256)
    n_head: int = opt(4, "query heads; must divide n_embd, and n_embd / n_head must be even (RoPE rotates pairs)",
                      ge=1, le=256)
    n_kv_head: int = opt(0, "key/value heads (grouped-query attention); must divide n_head; 0 = n_head", ge=0,
                         le=256)
    n_embd: int = opt(128, "embedding width C", ge=1, le=16384)
    ffn_hidden: int = opt(0, "SwiGLU hidden width; 0 = 8/3 n_embd rounded up to a multiple of 32", ge=0)
    rope_base: float = opt(10000.0, "RoPE base: pair i turns by position * base^(-2i / head size)", gt=1)
    norm_eps: float = opt(1e-5, "RMSNorm epsilon", gt=0)
    dropout: float = opt(0.0, "dropout on the embeddings, the attention weights and each residual branch", ge=0, lt=1)
    tie_weights: bool = opt(False, "share the token embedding with the output head (LLaMA does not)")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def hidden(self) -> int:
        return self.ffn_hidden or 32 * math.ceil(8 * self.n_embd / 3 / 32)


def check_config(cfg: LlamaConfig) -> None:
    if cfg.n_embd % cfg.n_head:
        raise ConfigError(f"model.n_head={cfg.n_head} must divide model.n_embd={cfg.n_embd}")
    if (cfg.n_embd // cfg.n_head) % 2:
        raise ConfigError(f"model.n_embd / model.n_head = {cfg.n_embd // cfg.n_head} must be even: rotary "
                          "embeddings rotate pairs of each head's dimensions")
    if cfg.n_head % cfg.kv_heads:
        raise ConfigError(f"model.n_kv_head={cfg.n_kv_head} must divide model.n_head={cfg.n_head}")


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv, self.hs = cfg.n_head, cfg.kv_heads, cfg.n_embd // cfg.n_head
        self.dropout = cfg.dropout
        self.q = nn.Linear(cfg.n_embd, self.n_head * self.hs, bias=False)
        self.kv = nn.Linear(cfg.n_embd, 2 * self.n_kv * self.hs, bias=False)  # keys and values in one matmul
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); `cos`, `sin` (T, hs / 2) are the angles of these tokens' positions."""
        B, T, C = x.shape
        q = self.q(x).view(B, T, self.n_head, self.hs).transpose(1, 2)  # (B, nh, T, hs)
        k, v = self.kv(x).view(B, T, 2, self.n_kv, self.hs).permute(2, 0, 3, 1, 4)  # (B, n_kv, T, hs) each
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            # As in the GPT: PyTorch's bf16 attention backward on CPU is slow, so attention runs in fp32.
            with torch.autocast("cpu", enabled=False):
                y = self.attend(q.float(), k.float(), v.float(), cache, layer).to(q.dtype)
        else:
            y = self.attend(q, k, v, cache, layer)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCache | None,
               layer: int) -> torch.Tensor:
        """q (B, nh, T, hs), k and v (B, n_kv, T, hs) of the new tokens -> (B, nh, T, hs)."""
        gqa = self.n_kv != self.n_head  # SDPA repeats each key/value head for its n_head / n_kv query heads
        if cache is None:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                                  is_causal=True, enable_gqa=gqa)
        start, T = cache.pos, q.shape[2]
        cache.k[layer][:, :, start:start + T] = k
        cache.v[layer][:, :, start:start + T] = v
        k, v = cache.k[layer][:, :, :start + T], cache.v[layer][:, :, :start + T]  # (B, n_kv, start + T, hs)
        # query i (absolute position start + i) sees keys 0 .. start + i; one new token sees them all
        mask = None if T == 1 else torch.ones(T, start + T, dtype=torch.bool, device=q.device).tril(start)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


class SwiGLU(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(cfg.n_embd, cfg.hidden, bias=False)
        self.up = nn.Linear(cfg.n_embd, cfg.hidden, bias=False)
        self.proj = nn.Linear(cfg.hidden, cfg.n_embd, bias=False)  # "down"
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.silu(self.gate(x)) * self.up(x)))  # (B, T, C) -> (B, T, hidden) -> (B, T, C)


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.norm2 = nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, cache, layer)
        return x + self.mlp(self.norm2(x))


class Llama(nn.Module):
    def __init__(self, cfg: LlamaConfig, vocab_size: int, block_size: int) -> None:
        super().__init__()
        check_config(cfg)
        self.cfg, self.vocab_size, self.block_size = cfg, vocab_size, block_size
        self.tok_emb = nn.Embedding(vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.n_embd, vocab_size, bias=False)
        if cfg.tie_weights:
            self.head.weight = self.tok_emb.weight
        cos, sin = rope_angles(cfg.n_embd // cfg.n_head, block_size, cfg.rope_base)  # (block_size, hs / 2)
        # Not persistent: computed, not learned, so checkpoints hold weights only.
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                # GPT-2's init, with each residual branch's last projection shrunk with depth.
                std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Token ids (B, T) -> next-token logits (B, T, V). With a cache, `idx` continues the cached tokens."""
        T = idx.shape[1]
        start = cache.pos if cache is not None else 0
        if start + T > self.block_size:
            raise ValueError(f"sequence of {start + T} tokens is longer than block_size={self.block_size}")
        cos, sin = self.cos[start:start + T], self.sin[start:start + T]  # the new tokens' absolute positions
        x = self.drop(self.tok_emb(idx))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, i)
        if cache is not None:
            cache.pos += T
        return self.head(self.norm(x))  # (B, T, V)

    def new_cache(self, batch: int) -> KVCache:
        p = self.tok_emb.weight
        return KVCache(self.cfg.n_layer, batch, self.cfg.kv_heads, self.block_size,
                       self.cfg.n_embd // self.cfg.n_head, p.device, p.dtype)


@register_model("llama", LlamaConfig, "LLaMA-style decoder: pre-norm RMSNorm, rotary positions, SwiGLU MLP, "
                                      "grouped-query attention (n_kv_head), KV cache", modality="text")
def build_llama(cfg: LlamaConfig, inputs: TextInputs) -> nn.Module:
    return Llama(cfg, inputs.vocab_size, inputs.block_size)
