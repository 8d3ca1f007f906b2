"""A word-level tokenizer for language modelling (`lm.tokenizer=word`), its vocabulary built from training text only.

Pieces: a run of letters and digits (`\\w+`, so à, è, ì, ò, ù are letters), one other visible character (a
punctuation mark), or a run of whitespace. A single space before a word or a punctuation mark belongs to it, as in
GPT-2's byte-level BPE, so " mezzo" and "mezzo" are two entries. The pieces of a text join back to it exactly:
a text made of vocabulary pieces round-trips through encode / decode.

Vocabulary: id 0 is `<unk>`, then every piece seen at least `min_count` times in the training text, most frequent
first (ties alphabetical), at most `max_size` entries in all (0 = no cap). The validation text is never looked at:
one of its pieces missing from training is `<unk>`. With min_count=2 the rare training words are `<unk>` too, so
the model learns to predict it; with min_count=1 it never sees `<unk>` in training and pays heavily for each one
in validation.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from dla.errors import DlaError
from dla.io import atomic_write

UNK = "<unk>"
_PIECE = re.compile(r" ?\w+| ?[^\w\s]|\s+(?!\S)|\s+")


def pieces(text: str) -> list[str]:
    """The text cut into words, punctuation marks and whitespace; "".join(pieces(t)) == t."""
    return _PIECE.findall(text)


class WordTokenizer:
    """One token per piece (see the module doc); unknown pieces are id 0, `<unk>`."""

    name = "word"

    def __init__(self, vocab: list[str]) -> None:
        if not vocab or vocab[0] != UNK or len(set(vocab)) != len(vocab):
            raise DlaError("a word vocabulary starts with <unk> and lists each piece once; is vocab.json damaged?")
        self.vocab = vocab
        self.index = {p: i for i, p in enumerate(vocab)}
        self.vocab_size = len(vocab)

    @classmethod
    def from_pieces(cls, train: list[str], min_count: int = 2, max_size: int = 0) -> WordTokenizer:
        """The vocabulary of the training pieces: frequent first, rare ones (< min_count) left to <unk>."""
        counts = Counter(train)
        kept = sorted((p for p, c in counts.items() if c >= min_count), key=lambda p: (-counts[p], p))
        if max_size:
            kept = kept[:max(max_size - 1, 0)]
        return cls([UNK, *kept])

    def encode(self, text: str) -> list[int]:
        return self.encode_pieces(pieces(text))

    def encode_pieces(self, ps: list[str]) -> list[int]:
        return [self.index.get(p, 0) for p in ps]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocab[i] for i in ids)

    def save(self, path: Path) -> None:
        with atomic_write(path, "w") as f:
            json.dump({"tokenizer": "word", "vocab": self.vocab}, f, ensure_ascii=False)
