"""Markdown tables take their columns from the results, whatever the task reports."""

from __future__ import annotations

import statistics

from dla.report.tables import best_index, fmt, fmt_mean_std, mean_std_table, metric_columns, runs_table


def test_columns_come_from_the_results() -> None:
    lm = [{"loss": 1.2, "bpc": 1.73}, {"loss": 1.1, "bpc": 1.59}]
    assert metric_columns(lm) == ["loss", "bpc"]
    # A test split's sizes and total nats are not metrics: no column to average or bold.
    whole = [{"loss": 1.5, "bpc": 2.2, "nats": 14406.9, "tokens": 9381, "characters": 9381, "unknown_tokens": 3}]
    assert metric_columns(whole) == ["loss", "bpc"]
    assert metric_columns([{"f1": 0.5, "accuracy": 0.9, "zeta": 2, "method": "lora", "ok": True}]) == \
        ["accuracy", "f1", "zeta"]
    table = runs_table([("a", lm[0]), ("b", lm[1])])
    assert table.splitlines()[0] == "| Run | Loss | BPC |" and "| b | 1.1000 | 1.5900 |" in table
    assert fmt("accuracy", 0.98765) == "98.77%" and fmt("bpc", 1.5) == "1.5000"
    assert fmt("success_rate", 0.5) == "50.00%"


def test_best_is_min_for_loss_like_metrics_and_max_otherwise() -> None:
    assert best_index("bpc", [1.7, 1.5, None]) == 1
    assert best_index("fpr95", [0.3, 0.2]) == 1
    assert best_index("accuracy", [0.9, float("nan"), 0.95]) == 2
    assert best_index("accuracy", [None, None]) is None
    groups = [("small", [{"loss": 1.3, "bpc": 1.9}, {"loss": 1.2, "bpc": 1.8}]),
              ("big", [{"loss": 1.0, "bpc": 1.5}, {"loss": 1.1, "bpc": 1.6}])]
    table = mean_std_table(groups, mark_best=True)
    big = next(line for line in table.splitlines() if line.startswith("| big |"))
    bpc = [1.5, 1.6]
    assert f"**{statistics.fmean(bpc):.4f} ± {statistics.stdev(bpc):.4f}**" in big
    assert "**" not in next(line for line in table.splitlines() if line.startswith("| small |"))
    assert fmt_mean_std("accuracy", [0.5, 0.7]) == f"60.00 ± {100 * statistics.stdev([0.5, 0.7]):.2f}%"
