"""Markdown tables: the seeds-style table (Loss | Accuracy | Precision | Recall) and mean ± std.

Runs of different tasks report different test metrics (classification: accuracy, precision, ...; the character
LM: loss and bits per character), so the tables take their columns from whatever numeric metrics the results
hold: the known ones first, in the familiar order, then any others alphabetically.
"""

from __future__ import annotations

import html
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

METRICS = ["loss", "accuracy", "precision", "recall", "f1"]
OPTIONAL = ["top5"]  # reported only for datasets with more than 10 classes; a column when any row has it
HEADERS = {"loss": "Loss", "accuracy": "Accuracy", "precision": "Precision", "recall": "Recall", "f1": "F1",
           "top5": "Top-5", "bpc": "BPC", "perplexity": "Perplexity", "auroc": "AUROC", "aupr_in": "AUPR-in",
           "aupr_out": "AUPR-out", "fpr95": "FPR95", "robust_accuracy": "Robust acc.",
           "success_rate": "Target success"}
KNOWN = [*METRICS, *OPTIONAL, "bpc", "perplexity", "robust_accuracy", "auroc", "aupr_in", "aupr_out", "fpr95"]
# Fractions in [0, 1] shown as percentages; everything else as a plain number.
PERCENT = {"accuracy", "precision", "recall", "f1", "top5", "robust_accuracy", "success_rate"}
# Where smaller is better (the best value of a column is its minimum); every other metric: its maximum.
LOWER_IS_BETTER = {"loss", "bpc", "perplexity", "fpr95"}


def header(metric: str) -> str:
    return HEADERS.get(metric, metric)


def fmt(metric: str, value: float) -> str:
    if metric in PERCENT:
        return f"{100 * value:.2f}%"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in
                                                              range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def numeric_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a results section (e.g. results.json's "test"); bools and strings dropped."""
    return {k: float(v) for k, v in results.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


# Sizes and sums a result carries beside its metrics (a language model's test split: its tokens, characters and
# total nats): the same for every run, or not a quality, so never a column to average and bold.
COUNTS = {"tokens", "characters", "nats", "unknown_tokens"}


def metric_columns(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every numeric metric any of `results` has: known ones in their usual order, then the rest sorted."""
    present: set[str] = set()
    for r in results:
        present |= {k for k, v in r.items() if v is not None and isinstance(v, int | float)
                    and not isinstance(v, bool) and k not in COUNTS}
    return [m for m in KNOWN if m in present] + sorted(present - set(KNOWN))


def with_optional(metrics: Sequence[str], results: Sequence[dict[str, float]]) -> list[str]:
    """`metrics`, plus each optional metric (top-5) that some result has.

    When none of `results` has any of `metrics` (a language model's loss/bpc against the classification
    columns), the columns come from the results themselves instead.
    """
    if results and not any(r.get(m) is not None for r in results for m in metrics if m != "loss"):
        return metric_columns(results)
    return [*metrics, *(m for m in OPTIONAL if m not in metrics and any(r.get(m) is not None for r in results))]


def best_index(metric: str, values: Sequence[float | None]) -> int | None:
    """Index of the best of `values` (min for LOWER_IS_BETTER metrics, else max); None when none is a number."""
    ok = [(v, i) for i, v in enumerate(values) if v is not None and not math.isnan(v)]
    if not ok:
        return None
    return (min(ok) if metric in LOWER_IS_BETTER else max(ok, key=lambda p: (p[0], -p[1])))[1]


def runs_table(rows: Sequence[tuple[str, dict[str, float]]], metrics: Sequence[str] | None = None) -> str:
    """One row per run: name, then each metric (default: METRICS, plus Top-5 where the results have it)."""
    metrics = with_optional(METRICS, [r for _, r in rows]) if metrics is None else metrics
    return markdown_table(["Run", *(header(m) for m in metrics)],
                          [[name, *(fmt(m, r[m]) if r.get(m) is not None else "" for m in metrics)]
                           for name, r in rows])


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return m, s


def fmt_mean_std(metric: str, values: Sequence[float]) -> str:
    m, s = mean_std(values)
    if metric in PERCENT:
        return f"{100 * m:.2f} ± {100 * s:.2f}%"
    return f"{m:.4f} ± {s:.4f}"


def group_values(results: Sequence[Mapping[str, Any]], metric: str) -> list[float]:
    return [float(r[metric]) for r in results if r.get(metric) is not None and not math.isnan(float(r[metric]))]


def mean_std_table(groups: Sequence[tuple[str, Sequence[dict[str, float]]]],
                   metrics: Sequence[str] | None = None, mark_best: bool = False) -> str:
    """One row per config: mean ± std over its seeds, and n (default metrics as for `runs_table`).

    mark_best: the best mean of each column (min for loss-like metrics, else max) in bold, when there are
    several rows to choose from.
    """
    metrics = with_optional(METRICS, [r for _, rs in groups for r in rs]) if metrics is None else metrics
    cells = [[fmt_mean_std(m, vals) if (vals := group_values(results, m)) else "" for m in metrics]
             for _, results in groups]
    if mark_best and len(groups) > 1:
        for j, m in enumerate(metrics):
            means = [mean_std(v)[0] if (v := group_values(rs, m)) else None for _, rs in groups]
            i = best_index(m, means)
            if i is not None:
                cells[i][j] = f"**{cells[i][j]}**"
    rows = [[name, *row, str(len(results))] for (name, results), row in zip(groups, cells, strict=True)]
    return markdown_table(["Config", *(header(m) for m in metrics), "n"], rows)


def md_text(text: str) -> str:
    """Text from run names, config values and files, made inert in Markdown: renderers pass raw HTML through
    (a run named `<img src=x onerror=...>`), so `& < >` become entities, as the HTML report escapes them."""
    return html.escape(text, quote=False)


def md_cell(text: str) -> str:
    """`md_text` for a table cell: pipes escaped, newlines flattened."""
    return md_text(text).replace("|", "\\|").replace("\n", " ")
