"""Markdown tables: the seeds-style table (Loss | Accuracy | Precision | Recall) and mean ± std."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

METRICS = ["loss", "accuracy", "precision", "recall", "f1"]
OPTIONAL = ["top5"]  # reported only for datasets with more than 10 classes; a column when any row has it
HEADERS = {"loss": "Loss", "accuracy": "Accuracy", "precision": "Precision", "recall": "Recall", "f1": "F1",
           "top5": "Top-5"}


def fmt(metric: str, value: float) -> str:
    return f"{value:.4f}" if metric == "loss" else f"{100 * value:.2f}%"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in
                                                              range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def with_optional(metrics: Sequence[str], results: Sequence[dict[str, float]]) -> list[str]:
    """`metrics`, plus each optional metric (top-5) that some result has."""
    return [*metrics, *(m for m in OPTIONAL if m not in metrics and any(r.get(m) is not None for r in results))]


def runs_table(rows: Sequence[tuple[str, dict[str, float]]], metrics: Sequence[str] | None = None) -> str:
    """One row per run: name, then each metric (default: METRICS, plus Top-5 where the results have it)."""
    metrics = with_optional(METRICS, [r for _, r in rows]) if metrics is None else metrics
    return markdown_table(["Run", *(HEADERS[m] for m in metrics)],
                          [[name, *(fmt(m, r[m]) if r.get(m) is not None else "" for m in metrics)]
                           for name, r in rows])


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return m, s


def fmt_mean_std(metric: str, values: Sequence[float]) -> str:
    m, s = mean_std(values)
    if metric == "loss":
        return f"{m:.4f} ± {s:.4f}"
    return f"{100 * m:.2f} ± {100 * s:.2f}%"


def mean_std_table(groups: Sequence[tuple[str, Sequence[dict[str, float]]]],
                   metrics: Sequence[str] | None = None) -> str:
    """One row per config: mean ± std over its seeds, and n (default metrics as for `runs_table`)."""
    metrics = with_optional(METRICS, [r for _, rs in groups for r in rs]) if metrics is None else metrics
    rows = []
    for name, results in groups:
        cells = []
        for m in metrics:
            vals = [r[m] for r in results if r.get(m) is not None and not math.isnan(r[m])]
            cells.append(fmt_mean_std(m, vals) if vals else "")
        rows.append([name, *cells, str(len(results))])
    return markdown_table(["Config", *(HEADERS[m] for m in metrics), "n"], rows)
