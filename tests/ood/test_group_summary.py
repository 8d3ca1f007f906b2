"""The sweep's OpenOOD-style summary: a row per method, per group mean ± std of AUROC and FPR95, best in bold."""

from __future__ import annotations

import statistics

from dla.ood.tables import Row, group_summary_table, table_rows


def _run(shift: float) -> list[Row]:
    # near: one set; far: two sets. msp is better on near, knn on far (AUROC) and everywhere on FPR95.
    def row(group: str, name: str, method: str, auroc: float, fpr: float) -> Row:
        return Row(group, name, method, method, {"auroc": auroc + shift, "aupr_in": 0.5, "aupr_out": 0.5,
                                                 "fpr95": fpr - shift})

    return table_rows([row("near", "tin", "msp", 0.80, 0.70), row("near", "tin", "knn", 0.78, 0.60),
                       row("far", "mnist", "msp", 0.70, 0.90), row("far", "mnist", "knn", 0.90, 0.40),
                       row("far", "noise", "msp", 0.60, 0.95), row("far", "noise", "knn", 0.80, 0.50)])


def _cells(text: str) -> dict[str, list[str]]:
    lines = [line.strip("|").split("|") for line in text.splitlines()]
    return {c[0].strip(): [x.strip() for x in c[1:]] for c in lines[2:]}


def test_group_means_over_runs_with_the_best_in_bold() -> None:
    runs = [_run(0.0), _run(0.02), _run(0.04)]
    text = group_summary_table(runs)
    assert text.splitlines()[0] == "| method | near AUROC | near FPR95 | far AUROC | far FPR95 |"
    cells = _cells(text)
    sd = statistics.stdev([0.0, 0.02, 0.04])
    assert cells["msp"][0] == f"**{0.82:.4f} ± {sd:.4f}**"  # near AUROC: msp's mean is the highest
    assert cells["knn"][0] == f"{0.80:.4f} ± {sd:.4f}"
    assert cells["knn"][1] == f"**{0.58:.4f} ± {sd:.4f}**"  # FPR95: lower is better
    assert cells["knn"][2] == f"**{0.87:.4f} ± {sd:.4f}**"  # far: the mean of mnist and noise, then over runs
    assert cells["msp"][3] == f"{0.905:.4f} ± {sd:.4f}"


def test_one_run_has_a_zero_std() -> None:
    cells = _cells(group_summary_table([_run(0.0)]))
    assert cells["msp"][2] == "0.6500 ± 0.0000"
