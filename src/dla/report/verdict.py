"""The lab reports' published numbers (reported.yaml, package data) and a verdict on each of dla's measurements.

The rule, stated once (the sweep summaries and `dla verdicts` print it under their tables):

- not comparable: the runs measured something else than the report: another dataset (the JPEG copy of CIFAR-10
  counts as CIFAR-10, and says so), a subset of the training or test set (a CPU budget), or other conditions the
  entry names (a language model's tokenizer and vocabulary: a loss per word is not a loss per character);
- n >= 3 runs with some spread: a two-sided one-sample t-test of the runs' values against the reported number at
  ALPHA = 0.05; not significant -> matched, significant -> beaten (mean above) or below;
- n < 3, or every run gave the same number: matched when the mean is within TOLERANCE (0.5 points of accuracy)
  of the report, else beaten or below. One seed cannot measure its own spread, so the band is fixed.
  For a loss (lower is better) "beaten" means a mean below the report.

A report gives one number without its seed spread, so "matched" means "no evidence of a difference", not
equality; "beaten" is only said when the runs' own spread makes the gap unlikely to be chance.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from dla.report.tables import LOWER_IS_BETTER

REPORTED_FILE = Path(__file__).with_name("reported.yaml")
ALPHA = 0.05
TOLERANCE = 0.005
SAME_DATA = {"cifar10_jpeg": "cifar10"}  # dla dataset -> the dataset a report measured on, when it is a copy
RULE = (f"Verdict: not comparable when the data differ or are a subset; with n >= 3 runs, a two-sided one-sample "
        f"t-test against the reported number (alpha {ALPHA:g}): matched unless significant, then beaten or below; "
        f"with n < 3 (or no spread), matched within {100 * TOLERANCE:g} points.")


@dataclass(frozen=True)
class Reported:
    lab: int
    exercise: str
    experiment: str
    config: str  # the sweep point without the seed; "" = the whole sweep
    metric: str
    value: float
    report: str
    dataset: str
    # results.json keys the report's number depends on, e.g. {"tokenizer": "word", "vocab_size": 5549}
    conditions: tuple[tuple[str, Any], ...] = ()


@cache
def reported_numbers() -> tuple[Reported, ...]:
    """Every published number in reported.yaml, in file order."""
    from dla.config import safe_load_yaml

    rows = safe_load_yaml(REPORTED_FILE.read_text(encoding="utf-8"), str(REPORTED_FILE))
    return tuple(Reported(int(r["lab"]), str(r["exercise"]), str(r["experiment"]), str(r.get("config", "")),
                          str(r["metric"]), float(r["value"]), str(r["report"]), str(r["dataset"]),
                          tuple(sorted((r.get("conditions") or {}).items()))) for r in rows)


def for_experiment(experiment: str) -> list[Reported]:
    return [r for r in reported_numbers() if r.experiment == experiment]


def incomparable(entry: Reported, results: Sequence[Mapping[str, Any]]) -> str:
    """Why these runs' numbers cannot be set against `entry` ("" when they can)."""
    for res in results:
        data = res.get("data") if isinstance(res.get("data"), Mapping) else {}
        name = str(data.get("name") or res.get("dataset", ""))
        if SAME_DATA.get(name, name) != entry.dataset:
            return f"measured on {name}, the report on {entry.dataset}"
        if data.get("limit_train") or data.get("limit_test"):
            return f"a subset: {int(data.get('train', 0)):,} training / {int(data.get('test', 0)):,} test images"
        differ = [(k, v, res.get(k)) for k, v in entry.conditions if res.get(k) != v]
        if differ:
            return "; ".join(f"{k} {ours!r} here, {theirs!r} in the report" for k, theirs, ours in differ)
    return ""


def t_test_p(values: Sequence[float], reference: float) -> float:
    """Two-sided p-value of the one-sample t-test of `values` (n >= 2, some spread) against `reference`."""
    from scipy import stats

    n, sd = len(values), statistics.stdev(values)
    t = (statistics.fmean(values) - reference) / (sd / math.sqrt(n))
    return float(2 * stats.t.sf(abs(t), n - 1))


def verdict(reference: float, values: Sequence[float], why_not: str = "",
            lower_is_better: bool = False) -> tuple[str, str]:
    """(verdict, its evidence) for runs' `values` against a reported number; see the module docstring."""
    if why_not:
        return "not comparable", why_not
    if not values:
        return "no runs", "no finished run"
    mean = statistics.fmean(values)
    side = "beaten" if (mean < reference if lower_is_better else mean > reference) else "below"
    if len(values) >= 3 and statistics.stdev(values) > 0:
        p = t_test_p(values, reference)
        return ("matched" if p >= ALPHA else side), f"t-test p = {p:.2g}"
    gap = abs(mean - reference)
    return ("matched" if gap <= TOLERANCE else side), f"n = {len(values)}: {100 * gap:.2f} points apart"


def verdict_rows(experiment: str, groups: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]) -> list[dict[str, Any]]:
    """One row per reported number of `experiment`: groups are (label, finished runs' results.json), labelled as
    the sweep labels its configs (the experiment's name when only the seed varies)."""
    by_label = {label: list(runs) for label, runs in groups}
    rows = []
    for entry in for_experiment(experiment):
        runs = by_label.get(entry.config or experiment, [])
        values = [float(r["test"][entry.metric]) for r in runs if entry.metric in (r.get("test") or {})]
        word, evidence = verdict(entry.value, values, incomparable(entry, runs) if runs else "",
                                 lower_is_better=entry.metric in LOWER_IS_BETTER)
        rows.append({"entry": entry, "values": values, "verdict": word, "evidence": evidence,
                     "data": _data_phrase(runs)})
    return rows


def _data_phrase(runs: Sequence[Mapping[str, Any]]) -> str:
    from dla.data.provenance import data_caption

    return data_caption(runs) if runs else "–"


def _value(entry: Reported, v: float) -> str:
    return f"{100 * v:.2f}%" if entry.metric in ("accuracy", "precision", "recall", "f1", "top5") else f"{v:.4f}"


def verdict_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: exercise | report | lab reported | dla mean ± std (n) | data and budget | verdict."""
    from dla.report.tables import md_cell

    lines = ["| Lab | Exercise | Report | Reported | dla mean ± std (n) | Data and budget | Verdict |",
             "|---:|---|---|---:|---:|---|---|"]
    for r in rows:
        e, v = r["entry"], r["values"]
        ours = "–" if not v else (f"{_value(e, statistics.fmean(v))} ± "
                                  f"{_value(e, statistics.stdev(v) if len(v) > 1 else 0.0)} ({len(v)})")
        lines.append(f"| {e.lab} | {md_cell(e.exercise)} | {md_cell(e.report)} | {_value(e, e.value)} | "
                     f"{ours} | {md_cell(r['data'])} | **{r['verdict']}** ({md_cell(r['evidence'])}) |")
    return "\n".join(lines) + "\n\n" + RULE + "\n"


def sweep_verdicts(sweep_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    """(experiment, verdict rows) of a sweep folder's finished runs, grouped as its summary groups them."""
    from dla.report.collect import group_name, sweep_runs
    from dla.runs import RunDir

    finished, _ = sweep_runs(sweep_dir)
    results = [RunDir(p).read_results() for p in finished]
    experiment = str(results[0].get("experiment", sweep_dir.parent.name)) if results else sweep_dir.parent.name
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, res in zip(finished, results, strict=True):
        label = group_name(path.name)
        groups.setdefault(experiment if label == "all" else label, []).append(res)
    return experiment, verdict_rows(experiment, list(groups.items()))


def find_sweeps(paths: Sequence[Path]) -> list[Path]:
    """Sweep folders (with sweep.csv) at, or one or two levels under, each path; sorted, each once."""
    from dla.errors import RunDirError

    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise RunDirError(f"{path} is not a folder; pass sweep folders or a folder holding them, such as runs")
        found += [c.parent for pattern in ("sweep.csv", "*/sweep.csv", "*/*/sweep.csv") for c in path.glob(pattern)]
    return sorted(dict.fromkeys(found))


def verdicts_text(paths: Sequence[Path]) -> str:
    """`dla verdicts`: one table over every sweep found that has published numbers to meet."""
    rows: list[dict[str, Any]] = []
    sweeps = find_sweeps(paths)
    for sweep in sweeps:
        mine = sweep_verdicts(sweep)[1]
        rows += [{**r, "data": f"{sweep.parent.name}/{sweep.name}: {r['data']}"} for r in mine if r["values"]]
    if not rows:
        names = ", ".join(sorted({r.experiment for r in reported_numbers()}))
        return (f"no finished sweep of an experiment with published numbers under {', '.join(map(str, paths))} "
                f"({len(sweeps)} sweep(s) found); those experiments are: {names}\n")
    order = {e: i for i, e in enumerate(reported_numbers())}
    rows.sort(key=lambda r: order[r["entry"]])  # reported.yaml's order: by lab and exercise
    return "# Against the lab reports\n\n" + verdict_table(rows)
