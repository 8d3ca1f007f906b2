"""Text fixtures: a tiny random BERT (saved like a hub model) so runs of every textcls method take seconds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ..conftest import DATA_ROOT, needs_data

MINILM = DATA_ROOT / "models" / "all-MiniLM-L6-v2"
TINY_GPT2 = DATA_ROOT / "models" / "tiny-gpt2"
needs_rt = needs_data("rotten_tomatoes")
needs_minilm = needs_data("minilm")
needs_tiny_gpt2 = needs_data("tiny-gpt2")

# hidden 32, 2 layers, FFN 64: every Linear shape of a BERT, at a size that trains in a second.
TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT with MiniLM's (uncased WordPiece) tokenizer, in a folder like a hub download."""
    pytest.importorskip("transformers")
    if not MINILM.is_dir():
        pytest.skip(f"no local MiniLM tokenizer to borrow under {MINILM} (set DLA_DATA)")
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, max_position_embeddings=128, **TINY_BERT)).save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(MINILM / name, folder / name)
    return folder
