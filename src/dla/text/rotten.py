"""Rotten Tomatoes sentence polarity (Pang & Lee 2005): 5,331 positive and 5,331 negative sentences.

Read from the data root (`rotten_tomatoes/rt-polaritydata/rt-polarity.{pos,neg}`, Windows-1252/latin-1 bytes as
Cornell ships them; a UTF-8 re-encoding of the same text is accepted too), or from the Hugging Face
`rotten_tomatoes` dataset when online and the files are absent.

Split like the public one, 8,530 / 1,066 / 1,066: the test sentences are drawn with a fixed seed, so every run
and every seed is scored on the same test set; validation is carved from the rest with the run's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dla.config import DataConfig
from dla.data.root import offline
from dla.errors import ConfigError, DataError

FOLDER = Path("rotten_tomatoes") / "rt-polaritydata"
FILES = {"neg": "rt-polarity.neg", "pos": "rt-polarity.pos"}
CLASSES = ["negative", "positive"]
TEST_FRACTION = 0.1  # 1,066 of 10,662, as in the public split
TEST_SEED = 20050601  # fixed: the test set does not move with the run's seed


@dataclass
class Sentences:
    texts: list[str]
    labels: torch.Tensor  # (N,) int64, 0 = negative, 1 = positive

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: torch.Tensor) -> Sentences:
        return Sentences([self.texts[i] for i in index.tolist()], self.labels[index])


@dataclass
class SentenceSplits:
    train: Sentences
    val: Sentences
    test: Sentences
    classes: list[str]


def read_lines(path: Path) -> list[str]:
    """One sentence per line. Bytes that are not text (NUL bytes: UTF-16 or a binary file; other control
    characters) are refused with the file named, instead of being decoded into silent garbage."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw:
        raise DataError(f"{path} is not latin-1 or UTF-8 text (it holds NUL bytes: UTF-16 or a binary file); "
                        "restore the original rt-polarity file (latin-1) or re-save it as UTF-8")
    try:
        text = raw.decode("utf-8")  # a re-encoded copy decodes as UTF-8; the original does not
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # every byte is a latin-1 character
    bad = sorted({c for c in text if ord(c) < 32 and c not in "\n\r\t"})
    if bad:
        raise DataError(f"{path} holds control characters ({', '.join(hex(ord(c)) for c in bad[:3])}), so it is "
                        "not text in latin-1 or UTF-8; restore the original rt-polarity file")
    # split("\n"), not splitlines(): latin-1 byte 0x85 (cp1252's ellipsis) is a line break to splitlines().
    lines = [line.strip() for line in text.split("\n")]
    return [line for line in lines if line]


def load_sentences(root: Path) -> Sentences:
    folder = root / FOLDER
    paths = {k: folder / v for k, v in FILES.items()}
    if all(p.is_file() for p in paths.values()):
        neg, pos = read_lines(paths["neg"]), read_lines(paths["pos"])
        if not neg or not pos:
            empty = paths["neg"] if not neg else paths["pos"]
            raise DataError(f"{empty} has no sentences; restore the original rt-polarity file")
        return Sentences(neg + pos, torch.cat([torch.zeros(len(neg)), torch.ones(len(pos))]).long())
    if not offline():
        hf = _from_hub()
        if hf is not None:
            return hf
    raise DataError(f"Rotten Tomatoes not found: expected {paths['pos']} and {paths['neg']} (rt-polaritydata.tar.gz "
                    "from https://www.cs.cornell.edu/people/pabo/movie-review-data/, extracted under "
                    f"{root / 'rotten_tomatoes'}), or go online with `pip install datasets`")


def _from_hub() -> Sentences | None:
    """The Hugging Face copy (the same sentences), when `datasets` is installed and the hub answers."""
    try:
        import datasets
    except ImportError:
        return None
    from dla.text.hf import hub_reachable

    if not hub_reachable():
        return None
    try:
        ds = datasets.load_dataset("rotten_tomatoes")
    except Exception as exc:  # network, cache or format trouble in a third-party library: one line
        raise DataError(f"cannot load the Hugging Face 'rotten_tomatoes' dataset: {exc}") from None
    texts: list[str] = []
    labels: list[int] = []
    for part in ("train", "validation", "test"):
        texts += list(ds[part]["text"])
        labels += list(ds[part]["label"])
    return Sentences(texts, torch.tensor(labels, dtype=torch.int64))


def split_sentences(data: Sentences, cfg: DataConfig, seed: int) -> SentenceSplits:
    """test: a fixed 10% (1,066); then limit_train / val_size apply to the rest (val carved with `seed`)."""
    n = len(data)
    n_test = max(1, round(TEST_FRACTION * n))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(TEST_SEED))
    test = data.subset(perm[:n_test].sort().values)
    rest = data.subset(perm[n_test:])  # in the fixed shuffled order, so limit_train keeps both classes
    if cfg.limit_train:
        rest = rest.subset(torch.arange(min(cfg.limit_train, len(rest))))
    if cfg.limit_test:
        test = test.subset(torch.arange(min(cfg.limit_test, len(test))))
    if cfg.val_size >= len(rest):
        raise ConfigError(f"config key 'data.val_size' = {cfg.val_size} leaves no training data "
                          f"({len(rest)} sentences outside the test set); choose a value below {len(rest)}")
    vperm = torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed))
    val = rest.subset(vperm[: cfg.val_size].sort().values)
    train = rest.subset(vperm[cfg.val_size:].sort().values)
    return SentenceSplits(train=train, val=val, test=test, classes=CLASSES)


def load_splits(cfg: DataConfig, root: Path, seed: int) -> SentenceSplits:
    """The loader `dla.text.datasets` calls for data.name=rotten_tomatoes."""
    if cfg.text_column or cfg.label_column:  # its two files have no columns; silently ignoring them would mislead
        raise ConfigError("data.text_column / data.label_column name columns of a Hugging Face dataset (hf:<id>, "
                          "imdb, yelp_review_full, yahoo_answers_topics); rotten_tomatoes has none, remove them")
    return split_sentences(load_sentences(root), cfg, seed)
