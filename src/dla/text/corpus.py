"""A text corpus for language modelling: the text, its tokenizer, and the train/val token streams.

The character vocabulary is the sorted set of characters of the whole text (so validation never meets an
unknown character) and is saved with the run (`vocab.json`), so a trained run generates without the corpus.
The word vocabulary (dla.text.words) is built from the training part only. The split is by position, not at
random: the first `train_fraction` of the tokens train, the rest validate, so no validation sentence leaks into
training through an overlapping block.

Each split also keeps how many characters of the original text it covers, so a loss per token converts to bits
per character for every tokenizer (dla.text.bpc): char, BPE and word models compare on one scale.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from dla.data.files import DataError, atomic_write, download
from dla.data.root import offline
from dla.errors import DlaError

# Where each corpus lives under the data root, and where it comes from when online.
CORPORA = {
    "dante_inferno": ("dante_inferno/inferno.txt", "https://www.gutenberg.org/cache/epub/1012/pg1012.txt"),
}


class Tokenizer(Protocol):
    name: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class CharTokenizer:
    """One token per character; ids are positions in the sorted character list."""

    name = "char"

    def __init__(self, chars: list[str]) -> None:
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}
        self.vocab_size = len(chars)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    def encode(self, text: str) -> list[int]:
        unknown = sorted({c for c in text if c not in self.index})
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:10])
            raise DlaError(f"the prompt has {len(unknown)} character(s) the model never saw ({shown}); "
                           f"use only characters of its vocabulary of {self.vocab_size}")
        return [self.index[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def save(self, path: Path) -> None:
        with atomic_write(path, "w") as f:
            json.dump({"tokenizer": "char", "chars": self.chars}, f, ensure_ascii=False)


class GPT2Tokenizer:
    """GPT-2's byte-level BPE (50,257 tokens) from the data root's `gpt2_tokenizer/`, or the hub when online."""

    name = "gpt2"

    def __init__(self, data_root: Path) -> None:
        try:
            from transformers import GPT2TokenizerFast
        except ImportError:
            raise DlaError("lm.tokenizer=gpt2 needs transformers: pip install -e '.[nlp]'") from None
        local = data_root / "gpt2_tokenizer"
        if not local.is_dir() and offline():
            raise DataError(f"GPT-2 tokenizer files not found in {local} and offline; put vocab.json and "
                            "merges.txt there or go online")
        self.tok = GPT2TokenizerFast.from_pretrained(str(local) if local.is_dir() else "gpt2")
        self.vocab_size = len(self.tok)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


def load_tokenizer_file(path: Path, data_root: Path) -> Tokenizer:
    """The tokenizer a run saved in `vocab.json`."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DlaError(f"cannot read the run's vocabulary {path}: {exc}; is this a run of task=lm?") from None
    if saved.get("tokenizer") == "char":
        return CharTokenizer(list(saved["chars"]))
    if saved.get("tokenizer") == "word":
        from dla.text.words import WordTokenizer

        return WordTokenizer(list(saved["vocab"]))
    if saved.get("tokenizer") == "hf":  # a fine-tuned pretrained model's own tokenizer, saved in the run
        from dla.text.pretrained_lm import load_saved_tokenizer

        return load_saved_tokenizer(path.parent / saved["folder"])
    return GPT2Tokenizer(data_root)


def read_corpus(name: str, data_root: Path, path: str = "") -> str:
    """The corpus text: `data.path` (under the data root, or absolute) if given, else the corpus's file."""
    relative, url = CORPORA[name]
    file = Path(path) if path and Path(path).is_absolute() else data_root / (path or relative)
    if not file.is_file():
        if path or offline():
            raise DataError(f"corpus file {file} not found; put the text there or pass --data-root")
        file = _download(url, data_root / relative)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{file} is not UTF-8 text (byte {exc.start}: {exc.reason}); convert it with "
                        f"`iconv -f latin1 -t utf-8`") from None
    text = strip_gutenberg(text)
    if len(text) < 100:
        raise DataError(f"corpus {file} has only {len(text)} characters; a language model needs a real text")
    return text


def strip_gutenberg(text: str) -> str:
    """Drop Project Gutenberg's header and licence (between its *** START / *** END markers), if present."""
    start = re.search(r"\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG[^\n]*\n", text)
    end = re.search(r"\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG", text)
    if start and end and start.end() < end.start():
        return text[start.end():end.start()].strip("\n") + "\n"
    return text


def _download(url: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    download(url, dest, None)  # Gutenberg publishes no checksum; the text is checked for length above
    return dest


@dataclass
class Corpus:
    tokenizer: Tokenizer
    train: torch.Tensor  # (N_train,) int64 token ids
    val: torch.Tensor  # (N_val,)
    train_chars: int = 0  # characters of the original text in each split; 0 = one per token
    val_chars: int = 0
    test: torch.Tensor | None = None  # (N_test,) the text's tail when lm.test_fraction > 0; None = val is the test
    test_chars: int = 0

    def ids(self, split: str) -> torch.Tensor:
        if split == "test" and self.test is None:
            raise ValueError("this corpus has no test split (lm.test_fraction=0): val is its test")
        return {"train": self.train, "val": self.val, "test": self.test}[split]

    def chars(self, split: str) -> int:
        n = {"train": self.train_chars, "val": self.val_chars, "test": self.test_chars}[split]
        return n or len(self.ids(split))


def load_corpus(name: str, data_root: Path, tokenizer: str | Tokenizer, train_fraction: float, block_size: int,
                path: str = "", *, word_min_count: int = 2, word_vocab_size: int = 0,
                test_fraction: float = 0.0) -> Corpus:
    """The text split by position into train / val (/ test) ids: the first `train_fraction` trains, the last
    `test_fraction` (if any) tests, what lies between validates. `tokenizer` is "char", "gpt2", "word" (vocabulary
    from the training part only: word_min_count, word_vocab_size), or a tokenizer (a pretrained model's)."""
    if train_fraction + test_fraction >= 1:
        raise DlaError(f"lm.train_fraction={train_fraction} and lm.test_fraction={test_fraction} leave no text to "
                       f"validate on; keep their sum below 1 (e.g. 0.9 and 0.05)")
    text = read_corpus(name, data_root, path)
    if tokenizer == "word":
        parts, tok, chars = _word_split(text, train_fraction, test_fraction, word_min_count, word_vocab_size)
    else:
        if isinstance(tokenizer, str):
            tok = CharTokenizer.from_text(text) if tokenizer == "char" else GPT2Tokenizer(data_root)
        else:
            tok = tokenizer
        parts = _cut(torch.tensor(tok.encode(text), dtype=torch.long), train_fraction, test_fraction)
        # A BPE split can fall inside a multi-byte character: the count is then off by one at the boundary.
        chars = [len(p) if tok.name == "char" else len(tok.decode(p.tolist())) for p in parts]
    if min(len(p) for p in parts) <= block_size:
        sizes = " / ".join(f"{len(p):,}" for p in parts)
        raise DlaError(f"lm.train_fraction={train_fraction}, lm.test_fraction={test_fraction} give {sizes} "
                       f"train / val{' / test' if test_fraction else ''} tokens, too few for "
                       f"lm.block_size={block_size}; lower the block size or raise the fractions")
    test = parts[2] if test_fraction else None
    return Corpus(tok, parts[0], parts[1], chars[0], chars[1], test, chars[2] if test_fraction else 0)


def _cut(seq: Any, train_fraction: float, test_fraction: float) -> list[Any]:
    """[train, val] or [train, val, test] by position: the head trains, the tail tests."""
    n = len(seq)
    a, b = int(train_fraction * n), n - int(test_fraction * n)
    return [seq[:a], seq[a:b], seq[b:n]] if test_fraction else [seq[:a], seq[a:]]


def _word_split(text: str, train_fraction: float, test_fraction: float, min_count: int,
                max_size: int) -> tuple[list[torch.Tensor], Tokenizer, list[int]]:
    """Cut into pieces, split them by position, then build the vocabulary from the training pieces alone."""
    from dla.text.words import WordTokenizer, pieces

    parts = _cut(pieces(text), train_fraction, test_fraction)
    tok = WordTokenizer.from_pieces(parts[0], min_count, max_size)
    ids = [torch.tensor(tok.encode_pieces(p), dtype=torch.long) for p in parts]
    return ids, tok, [sum(map(len, p)) for p in parts]


class BlockSampler:
    """Random contiguous blocks: x = ids[i : i + T], y = ids[i + 1 : i + T + 1] for B random starts i.

    The generator is seeded and its state goes into checkpoints, so a resumed run draws the same batches.
    """

    def __init__(self, ids: torch.Tensor, block_size: int, batch_size: int, seed: int) -> None:
        # Every window of T + 1 tokens as a (N - T, T + 1) view: a batch is one gather, no Python loop.
        self.windows = ids.unfold(0, block_size + 1, 1)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(self.windows), (self.batch_size,), generator=self.generator)
        block = self.windows[starts]  # (B, T + 1)
        return block[:, :-1], block[:, 1:]
