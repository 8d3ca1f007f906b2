"""What data a result was measured on, in words that travel with it (results.json, summaries, sweep tables).

A number measured on a subset, on the JPEG copy of CIFAR-10 or on a stand-in must say so wherever it is shown,
so it cannot pass for the benchmark's own figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dla.config import ExperimentConfig
from dla.data.splits import Splits

ORIGINAL = "original files"


def data_provenance(cfg: ExperimentConfig, splits: Splits) -> dict[str, Any]:
    """results.json's "data" section: the dataset, its source and the split sizes actually used."""
    return {
        "name": cfg.data.name,
        "source": splits.spec.source or ORIGINAL,
        "train": len(splits.train),
        "val": len(splits.val),
        "test": len(splits.test),
        "limit_train": cfg.data.limit_train,
        "limit_test": cfg.data.limit_test,
    }


def data_caption(results: Sequence[Mapping[str, Any]]) -> str:
    """One phrase naming the data of these runs, e.g. "cifar10_jpeg (CIFAR-10, JPEG copy ...; 45,000/5,000/10,000
    train/val/test)"; runs that disagree are each named."""
    phrases = []
    for r in results:
        data = r.get("data")
        if not isinstance(data, Mapping):  # results written before provenance existed
            phrase = str(r.get("dataset", "unknown data"))
        else:
            sizes = "/".join(f"{int(data.get(k, 0)):,}" for k in ("train", "val", "test"))
            source = data.get("source", ORIGINAL)
            what = f"{source}; " if source != ORIGINAL else ""
            limited = ", subset" if data.get("limit_train") or data.get("limit_test") else ""
            phrase = f"{data.get('name')} ({what}{sizes} train/val/test{limited})"
        if phrase not in phrases:
            phrases.append(phrase)
    return "; ".join(phrases) if phrases else "unknown data"
