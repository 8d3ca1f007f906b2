"""Labelled text datasets through Hugging Face `datasets`: `data.name=hf:<id>` and the presets of the lab reports.

Where the rows come from, first match wins:
1. `data.path` (absolute, or under the data root): a `save_to_disk` folder, a parquet file or folder, a CSV file;
2. for a preset, `<data root>/<preset name>` in any of those formats; for `hf:<id>`, `<id>` itself when it is a
   local path (absolute, or under the data root);
3. the Hub, `datasets.load_dataset(<id>)`, when online (offline: one line naming where it looked).

Splits: the dataset's `train`, `validation` and `test`. Without a test split (a single CSV), a fixed 10% of train
is the test set, drawn with a fixed seed so that every run is scored on the same rows; without a validation split,
`data.val_size` rows of the rest are carved with the run's seed. `data.limit_train` / `data.limit_test` keep a
fixed random subset (many Hub splits are sorted by label; the first N rows would be one class).

Columns: `data.text_column` (several joined by +, their texts joined by a newline, empty ones skipped) and
`data.label_column`, which must hold integer class indices. Class names come from a `ClassLabel` feature; without
one (a CSV), the classes are named 0..K-1 after the largest label seen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dla.config import DataConfig
from dla.data.root import offline
from dla.errors import ConfigError, DataError
from dla.text.local_tables import Table, read_local, require_datasets
from dla.text.rotten import Sentences, SentenceSplits

HF_PREFIX = "hf:"
TEST_FRACTION = 0.1
TEST_SEED = 20050601  # the same fixed draw as Rotten Tomatoes' test set
LIMIT_SEED = 1_000_003  # data.limit_*: a fixed subset, the same for every run seed
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


@dataclass(frozen=True)
class HfPreset:
    hub_id: str
    text_column: str
    label_column: str
    description: str


PRESETS: dict[str, HfPreset] = {
    "imdb": HfPreset("stanfordnlp/imdb", "text", "label",
                     "IMDB movie reviews (25,000 train + 25,000 test, 2 classes; the unlabelled split is unused)"),
    "yelp_review_full": HfPreset("Yelp/yelp_review_full", "text", "label",
                                 "Yelp reviews (650,000 train + 50,000 test, 5 classes: 1 to 5 stars)"),
    "yahoo_answers_topics": HfPreset(
        "community-datasets/yahoo_answers_topics", "question_title+question_content+best_answer", "topic",
        "Yahoo! Answers (1,400,000 train + 60,000 test, 10 topics; text = title, question and best answer)"),
}


def load_splits(cfg: DataConfig, root: Path, seed: int) -> SentenceSplits:
    """The train / val / test sentences of a preset or of `hf:<id>`."""
    preset = PRESETS.get(cfg.name)
    text_columns = (cfg.text_column or (preset.text_column if preset else "text")).split("+")
    label_column = cfg.label_column or (preset.label_column if preset else "label")
    if not all(c.strip() for c in text_columns):
        raise ConfigError(f"data.text_column={cfg.text_column!r} names an empty column; join names with +")
    tables, where = _tables(cfg, root, preset)
    return split_tables(tables, [c.strip() for c in text_columns], label_column.strip(), cfg, seed, where)


def _tables(cfg: DataConfig, root: Path, preset: HfPreset | None) -> tuple[dict[str, Table], str]:
    """({split: table}, a name for messages) from the local copy, or the Hub."""
    ident = preset.hub_id if preset else cfg.name[len(HF_PREFIX):]
    if cfg.path:
        local = Path(cfg.path) if Path(cfg.path).is_absolute() else root / cfg.path
        return read_local(local), str(local)
    candidates = [root / cfg.name] if preset else [Path(ident) if Path(ident).is_absolute() else root / ident]
    for local in candidates:
        if local.exists():
            return read_local(local), str(local)
    if not _HUB_ID.fullmatch(ident):
        raise ConfigError(f"data.name={cfg.name!r}: {ident!r} is neither a local path (looked at {candidates[0]}) "
                          "nor a Hugging Face dataset id such as stanfordnlp/imdb")
    if offline():
        raise DataError(f"{cfg.name}: no local copy at {candidates[0]} and offline, so the Hub's {ident!r} cannot "
                        "be downloaded; put a save_to_disk folder, parquet or CSV there (or pass data.path), or "
                        "go online")
    return _from_hub(ident), f"hf:{ident}"


def _from_hub(ident: str) -> dict[str, Table]:
    datasets = require_datasets()
    try:
        loaded = datasets.load_dataset(ident)
    except Exception as exc:  # network, cache or format trouble inside a third-party library: one line
        raise DataError(f"cannot load the Hugging Face dataset {ident!r}: {str(exc).strip()[:300]}") from None
    from dla.text.local_tables import canonical_split

    return {canonical_split(name): Table(ds.with_format("arrow")[:], ds.features) for name, ds in loaded.items()}


def split_tables(tables: dict[str, Table], text_columns: list[str], label_column: str, cfg: DataConfig,
                 seed: int, where: str) -> SentenceSplits:
    """Train / val / test sentences: the splits the dataset has, the missing ones carved (see the module doc)."""
    if "train" not in tables:
        raise DataError(f"{where} has no train split (its splits: {', '.join(sorted(tables)) or 'none'}); name the "
                        "training file train*.parquet / train*.csv, or give a single file")
    for name in ("train", "validation", "test"):
        if name in tables:
            _check_columns(tables[name].data, text_columns, label_column, name, where)
    train = tables["train"].data
    test = tables["test"].data if "test" in tables else None
    if test is None:  # a fixed draw: every run and seed is scored on the same rows
        perm = _perm(train.num_rows, TEST_SEED)
        n_test = max(1, round(TEST_FRACTION * train.num_rows))
        test, train = train.take(perm[:n_test].sort().values.numpy()), train.take(perm[n_test:].numpy())
    train, test = _limit(train, cfg.limit_train), _limit(test, cfg.limit_test)
    val = tables["validation"].data if "validation" in tables else None
    if val is None:
        if cfg.val_size < 1:  # an empty validation split could pick no checkpoint
            raise ConfigError(f"config key 'data.val_size' must be >= 1: {where} has no validation split to use")
        if cfg.val_size >= train.num_rows:
            raise ConfigError(f"config key 'data.val_size' = {cfg.val_size} leaves no training data ({where} has "
                              f"{train.num_rows} training rows and no validation split); choose a value below "
                              f"{train.num_rows}")
        vperm = _perm(train.num_rows, seed)
        val = train.take(vperm[:cfg.val_size].sort().values.numpy())
        train = train.take(vperm[cfg.val_size:].sort().values.numpy())
    parts = {"train": train, "validation": val, "test": test}
    sents = {n: _sentences(t, text_columns, label_column) for n, t in parts.items()}
    classes = _classes(tables["train"].features.get(label_column), sents, label_column, where)
    return SentenceSplits(train=sents["train"], val=sents["validation"], test=sents["test"], classes=classes)


def _perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _limit(table: Any, n: int) -> Any:
    if not n or n >= table.num_rows:
        return table
    return table.take(_perm(table.num_rows, LIMIT_SEED)[:n].sort().values.numpy())


def _column(table: Any, name: str, split: str, where: str) -> Any:
    if name not in table.column_names:
        raise DataError(f"{where}: split {split!r} has no column {name!r}; its columns are "
                        f"{', '.join(table.column_names)} (set data.text_column / data.label_column)")
    return table.column(name)


def _check_columns(table: Any, text_columns: list[str], label_column: str, split: str, where: str) -> None:
    """Rows, the text columns' type and integer labels without gaps, before anything is split or converted."""
    import pyarrow as pa

    if table.num_rows == 0:
        raise DataError(f"{where}: split {split!r} is empty (0 rows)")
    for name in text_columns:
        col = _column(table, name, split, where)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise DataError(f"{where}: column {name!r} holds {col.type}, not text; set data.text_column to a "
                            "string column")
    labels = _column(table, label_column, split, where)
    if not pa.types.is_integer(labels.type):
        shown = ", ".join(repr(v) for v in labels.slice(0, 3).to_pylist())
        raise DataError(f"{where}: labels must be integer class indices, but column {label_column!r} holds "
                        f"{labels.type} ({shown}, ...); store 0..K-1 (or a ClassLabel feature)")
    if labels.null_count:
        raise DataError(f"{where}: column {label_column!r} of split {split!r} has {labels.null_count} missing "
                        "label(s); drop those rows")


def _sentences(table: Any, text_columns: list[str], label_column: str) -> Sentences:
    """Texts (several columns joined by a newline; a missing or empty value skipped) and int64 labels."""
    columns = [table.column(name).to_pylist() for name in text_columns]
    texts = ["\n".join(p for p in row if p) for row in zip(*columns, strict=True)]
    labels = table.column(label_column).to_numpy(zero_copy_only=False)
    return Sentences(texts, torch.tensor(labels, dtype=torch.int64))


def _classes(feature: Any, sents: dict[str, Sentences], label_column: str, where: str) -> list[str]:
    """The ClassLabel's names, else 0..K-1; every label checked to lie in range."""
    names = list(getattr(feature, "names", None) or [])
    top = max(int(s.labels.max()) for s in sents.values())
    low = min(int(s.labels.min()) for s in sents.values())
    k = len(names) or top + 1
    if low < 0 or top >= k:
        bad = low if low < 0 else top
        raise DataError(f"{where}: label {bad} in column {label_column!r} is not a class index 0..{k - 1}"
                        + (f" (its ClassLabel has {k} names)" if names else ""))
    if len(sents["train"].labels.unique()) < 2:
        raise DataError(f"{where}: the training rows of column {label_column!r} hold a single class; a classifier "
                        "needs two or more")
    return names or [str(i) for i in range(k)]
