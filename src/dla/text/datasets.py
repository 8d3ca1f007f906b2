"""The text datasets: names for `data.name`, next to the image registry's, each with the task that reads it.

A corpus (one long text) trains a language model (task=lm); a sentence set (labelled sentences) trains a
text classifier (task=textcls). The loaders live with their task; this table names and describes them, and
`load_sentence_splits` hands a sentence set's config to its loader (a module's `load_splits`). Besides the
names listed, `hf:<id>` is any Hugging Face dataset or local copy (dla.text.hf_datasets).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dla.errors import ConfigError
from dla.text.hf_datasets import HF_PREFIX, PRESETS

if TYPE_CHECKING:
    from dla.config import DataConfig
    from dla.text.rotten import SentenceSplits


@dataclass(frozen=True)
class TextDataset:
    name: str
    task: str  # the config `task` that reads it
    description: str
    loader: str = ""  # task=textcls: the module whose load_splits(cfg, root, seed) reads it


TEXT_DATASETS: dict[str, TextDataset] = {d.name: d for d in (
    TextDataset("dante_inferno", "lm", "Dante, Inferno (Italian, 187,621 characters; Project Gutenberg)"),
    TextDataset("rotten_tomatoes", "textcls", "Rotten Tomatoes sentence polarity (5,331 + 5,331 sentences)",
                "dla.text.rotten"),
    *(TextDataset(name, "textcls", f"{p.description}; Hugging Face {p.hub_id}", "dla.text.hf_datasets")
      for name, p in PRESETS.items()),
)}


def is_hf_name(name: str) -> bool:
    return isinstance(name, str) and name.startswith(HF_PREFIX) and bool(name[len(HF_PREFIX):].strip())


def text_dataset(name: str) -> TextDataset | None:
    """The table's entry, or one made for `hf:<id>`; None for an image dataset or an unknown name."""
    if is_hf_name(name):
        return TextDataset(name, "textcls", "a Hugging Face dataset or local copy", "dla.text.hf_datasets")
    return TEXT_DATASETS.get(name)


def text_dataset_names() -> list[str]:
    return sorted(TEXT_DATASETS)


def load_sentence_splits(cfg: DataConfig, root: Path, seed: int) -> SentenceSplits:
    """train / val / test sentences of the sentence set `cfg.name` (config.validate let only those through)."""
    spec = text_dataset(cfg.name)
    if spec is None or not spec.loader:
        names = [n for n, d in TEXT_DATASETS.items() if d.loader]
        raise ConfigError(f"data.name={cfg.name!r} is not a sentence dataset; use {', '.join(names)} or hf:<id>")
    return importlib.import_module(spec.loader).load_splits(cfg, root, seed)
