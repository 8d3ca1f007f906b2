"""`lm.init_from`: fine-tune a pretrained Hugging Face causal LM (GPT-2 and kin) in dla's own LM loop.

The Hugging Face model is wrapped so that it looks like dla's GPT to the trainer and to `generate()`: token ids
(B, T) in, next-token logits (B, T, V) out, `block_size`, and `new_cache(batch)` for incremental decoding (the
model's own `past_key_values`, which also carry the position offset). The tokenizer is the model's. A run
folder keeps the model's config.json and tokenizer files in `pretrained/`, so `dla generate RUN` rebuilds the
model from the run alone (architecture from the config, weights from checkpoints/best.pt), offline.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dla.errors import ConfigError, DlaError
from dla.io import atomic_write
from dla.text.hf import from_pretrained_checked, require_transformers, resolve_pretrained

FOLDER = "pretrained"  # inside the run folder: config.json + tokenizer files


class HFTokenizer:
    """The pretrained model's own tokenizer behind dla's Tokenizer protocol."""

    name = "hf"

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.vocab_size = len(tok)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, clean_up_tokenization_spaces=False)

    def save(self, path: Path) -> None:
        """`path` is the run's vocab.json: it points at the tokenizer files saved beside it."""
        self.tok.save_pretrained(str(path.parent / FOLDER))
        with atomic_write(path, "w") as f:
            json.dump({"tokenizer": "hf", "folder": FOLDER}, f)


class HFCache:
    """The Hugging Face cache (None until the first call) and how many tokens it holds."""

    def __init__(self) -> None:
        self.past: Any = None
        self.pos = 0

    def reset(self) -> None:
        self.past, self.pos = None, 0


class PretrainedLM(nn.Module):
    def __init__(self, hf_model: nn.Module, block_size: int) -> None:
        super().__init__()
        longest = getattr(hf_model.config, "max_position_embeddings", None) or getattr(hf_model.config,
                                                                                        "n_positions", None)
        if longest is not None and block_size > longest:
            raise ConfigError(f"lm.block_size={block_size} is longer than the pretrained model's {longest} "
                              "positions; lower lm.block_size")
        self.hf, self.block_size = hf_model, block_size
        # transformers 5.x renames `past_key_values` to `cache` (input and output); older versions know only the first.
        params = inspect.signature(hf_model.forward).parameters
        self.cache_key = "cache" if "cache" in params else "past_key_values"
        self.vocab_size = hf_model.get_output_embeddings().weight.shape[0]

    def forward(self, idx: torch.Tensor, cache: HFCache | None = None) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, V); with a cache, `idx` continues the cached tokens."""
        T = idx.shape[1]
        start = cache.pos if cache is not None else 0
        if start + T > self.block_size:
            raise ValueError(f"sequence of {start + T} tokens is longer than block_size={self.block_size}")
        past = {self.cache_key: cache.past} if cache is not None else {}
        out = self.hf(input_ids=idx, use_cache=cache is not None, **past)
        if cache is not None:
            cache.past, cache.pos = out.get(self.cache_key), start + T
        return out.logits

    def new_cache(self, batch: int) -> HFCache:
        return HFCache()

    def save_config(self, run_path: Path) -> None:
        self.hf.config.save_pretrained(str(run_path / FOLDER))


def load_pretrained(name: str, data_root: Path, block_size: int) -> tuple[PretrainedLM, HFTokenizer]:
    """The model and tokenizer `lm.init_from` names: a folder (never the network), data root models/, or the hub."""
    tf = require_transformers()
    try:
        where = resolve_pretrained(name, data_root, kind="model")
    except DlaError as exc:
        example = next((p for p in sorted((data_root / "models").glob("*gpt2*")) if p.is_dir()), None)
        hint = f" (e.g. lm.init_from={example})" if example else ""
        raise DlaError(f"lm.init_from={name!r}: {exc}; offline, set lm.init_from to a local folder holding "
                       f"config.json, model.safetensors and the tokenizer files{hint}") from None
    tok = from_pretrained_checked(tf.AutoTokenizer, where, name, "tokenizer")
    hf_model = from_pretrained_checked(tf.AutoModelForCausalLM, where, name, "model")
    return PretrainedLM(hf_model, block_size).train(), HFTokenizer(tok)  # from_pretrained leaves eval mode


def load_saved_tokenizer(folder: Path) -> HFTokenizer:
    tf = require_transformers()
    return HFTokenizer(from_pretrained_checked(tf.AutoTokenizer, str(folder), str(folder), "tokenizer"))


def rebuild_from_run(run_path: Path, block_size: int) -> tuple[PretrainedLM, HFTokenizer]:
    """The architecture and tokenizer a fine-tuning run saved (weights: random until best.pt is loaded)."""
    tf = require_transformers()
    folder = run_path / FOLDER
    if not (folder / "config.json").is_file():
        raise DlaError(f"run {run_path} fine-tuned a pretrained model but has no {FOLDER}/config.json; it cannot "
                       "be rebuilt")
    config = from_pretrained_checked(tf.AutoConfig, str(folder), str(folder), "config")
    return PretrainedLM(tf.AutoModelForCausalLM.from_config(config), block_size), load_saved_tokenizer(folder)
