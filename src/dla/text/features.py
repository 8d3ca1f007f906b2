"""Frozen-encoder features: pooled sentence vectors computed once and cached, and the small heads trained on them.

The cache key covers everything the vectors depend on (encoder, its weights file, pooling, max_length and the
sentences themselves), so a changed split or encoder never reuses stale vectors. Cache files live under the
runs folder (never in the data root), are written atomically and read back weights-only.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from dla.io import atomic_write
from dla.text.encoders import encode_texts, pool, trim


def cache_key(encoder: str, pooling: str, max_length: int, texts: list[str]) -> str:
    h = hashlib.sha256()
    where = Path(encoder)
    weights = sorted(where.glob("*.safetensors")) + sorted(where.glob("*.bin")) if where.is_dir() else []
    stamp = [(p.name, p.stat().st_size) for p in weights]  # a re-saved encoder gets new vectors
    h.update(json.dumps([str(encoder), stamp, pooling, max_length]).encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()[:20]


@torch.no_grad()
def compute_features(encoder: nn.Module, tokenizer: object, texts: list[str], *, pooling: str, max_length: int,
                     batch_size: int, device: torch.device, log: bool = True) -> torch.Tensor:
    """(N, D) float32 pooled last hidden states, in the order of `texts`. Sentences go through in order of
    length, so each batch is cut to its own longest sentence."""
    x = encode_texts(tokenizer, texts, max_length)  # (N, 2, L)
    order = x[:, 1].sum(1).argsort()
    encoder.eval().to(device)
    chunks = []
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        idx = order[i:i + batch_size]
        b = trim(x[idx]).to(device)
        hidden = encoder(input_ids=b[:, 0], attention_mask=b[:, 1]).last_hidden_state
        chunks.append(pool(hidden, b[:, 1], pooling).float().cpu())
        if log and (i // batch_size) % 20 == 0:
            print(f"  features {min(i + batch_size, len(texts))}/{len(texts)} ({time.perf_counter() - t0:.0f}s)",
                  flush=True)
    feats = torch.cat(chunks)
    out = torch.empty_like(feats)
    out[order] = feats
    return out


def cached_features(cache_dir: Path, key: str,
                    compute: Callable[[], dict[str, torch.Tensor]]) -> tuple[dict[str, torch.Tensor], bool]:
    """{'train','val','test': (N, D)} from `cache_dir/<key>.pt`, or computed now and stored; (features, hit)."""
    path = cache_dir / f"{key}.pt"
    if path.is_file():
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict) and obj.get("key") == key:
                return {k: obj[k] for k in ("train", "val", "test")}, True
        except Exception:  # a damaged cache file is recomputed, never trusted
            pass
    feats = compute()
    buf = io.BytesIO()
    torch.save({"key": key, **feats}, buf)
    with atomic_write(path) as f:
        f.write(buf.getbuffer())
    return feats, False


class Standardize(nn.Module):
    """(x - mean) / std with the training features' statistics, kept as buffers so the checkpoint carries them."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clamp_min(1e-6).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_head(kind: str, train_features: torch.Tensor, num_classes: int, hidden: int,
               dropout: float) -> nn.Sequential:
    """Logistic regression (one Linear on standardised features) or a 2-layer MLP."""
    dim = train_features.shape[1]
    std = Standardize(train_features.mean(0), train_features.std(0))
    if kind == "logreg":
        return nn.Sequential(std, nn.Linear(dim, num_classes))
    return nn.Sequential(std, nn.Dropout(dropout), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))
