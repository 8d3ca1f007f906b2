"""The lab reports' numbers as data and the verdict rule: hand-made numbers, the t-test against scipy's, the
packaged entries against the experiments they name, and a sweep's summary and `dla verdicts` on a sweep folder."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from scipy import stats

from dla.config import load_config, read_experiment
from dla.report.verdict import (
    RULE,
    TOLERANCE,
    Reported,
    incomparable,
    reported_numbers,
    sweep_verdicts,
    t_test_p,
    verdict,
)
from dla.sweep import point_name, write_sweep_summary

from ..conftest import run_cli

ENTRY = Reported(3, "3.1 ID model", "cnn_cifar10", "", "accuracy", 0.7679, "lab report A", "cifar10")
FULL = {"name": "cifar10", "source": "original files", "train": 45000, "val": 5000, "test": 10000,
        "limit_train": 0, "limit_test": 0}


def test_the_t_test_is_scipys_one_sample_test() -> None:
    values = [0.801, 0.797, 0.799]
    assert t_test_p(values, 0.7679) == pytest.approx(stats.ttest_1samp(values, 0.7679).pvalue, rel=1e-12)


@pytest.mark.parametrize(("values", "word"), [
    ([0.7679 + TOLERANCE / 2], "matched"),  # n = 1: within the fixed band
    ([0.7679 + 2 * TOLERANCE], "beaten"),
    ([0.7679 - 2 * TOLERANCE, 0.7679 - 2 * TOLERANCE], "below"),  # n = 2: still the band
    ([0.770, 0.765, 0.768], "matched"),  # n = 3: p large
    ([0.7983, 0.7993, 0.7975], "beaten"),  # n = 3: p tiny, above
    ([0.70, 0.71, 0.705], "below"),
    ([0.80, 0.80, 0.80], "beaten"),  # no spread: the band decides
])
def test_the_verdict_rule_on_hand_made_numbers(values: list[float], word: str) -> None:
    got, evidence = verdict(0.7679, values)
    assert got == word, evidence
    assert ("t-test" in evidence) == (len(values) >= 3 and statistics.stdev(values) > 0)


def test_other_data_or_a_subset_is_not_comparable_and_the_jpeg_copy_is() -> None:
    assert incomparable(ENTRY, [{"data": FULL}]) == ""
    assert incomparable(ENTRY, [{"data": {**FULL, "name": "cifar10_jpeg"}}]) == ""
    assert "measured on fashion_mnist" in incomparable(ENTRY, [{"data": {**FULL, "name": "fashion_mnist"}}])
    assert "a subset: 10,000 training" in incomparable(ENTRY, [{"data": {**FULL, "train": 10000,
                                                                         "limit_train": 15000}}])
    assert verdict(0.7679, [0.9], "a subset") == ("not comparable", "a subset")


def test_a_loss_is_beaten_from_below_and_other_tokens_are_not_comparable() -> None:
    assert verdict(5.97, [5.5, 5.51, 5.49], lower_is_better=True)[0] == "beaten"
    assert verdict(5.97, [6.5, 6.51, 6.49], lower_is_better=True)[0] == "below"
    llama = next(e for e in reported_numbers() if e.experiment == "dante_llama" and e.config == "n_head=4")
    data = {"name": "dante_inferno"}
    assert incomparable(llama, [{"dataset": "dante_inferno", "data": data, "tokenizer": "word",
                                 "vocab_size": 5549}]) == ""
    why = incomparable(llama, [{"dataset": "dante_inferno", "tokenizer": "char", "vocab_size": 72}])
    assert why == "tokenizer 'char' here, 'word' in the report; vocab_size 72 here, 5549 in the report"


@pytest.mark.parametrize("entry", reported_numbers(), ids=lambda e: f"{e.experiment}:{e.config}:{e.report}")
def test_every_published_number_names_an_experiment_and_one_of_its_sweep_points(entry: Reported) -> None:
    cfg = load_config(entry.experiment)
    assert cfg.data.name == entry.dataset or cfg.data.fallback, (cfg.data.name, entry.dataset)
    assert entry.metric in ("accuracy", "f1", "loss") and entry.value > 0
    if entry.config:  # the label the sweep's summary gives that point
        axes = {k: v for k, v in (read_experiment(entry.experiment).get("sweep") or {}).items() if k != "seed"}
        labels = {point_name(dict(zip(axes, combo, strict=True))) for combo in _grid(list(axes.values()))}
        assert entry.config in labels, sorted(labels)


def _grid(values: list[list[object]]) -> list[tuple[object, ...]]:
    import itertools

    return list(itertools.product(*values))


def _fake_sweep(root: Path, accuracies: list[float], data: dict) -> Path:
    """A cnn_cifar10 sweep folder of finished seeds: the inputs the summary and `dla verdicts` read."""
    sweep = root / "cnn_cifar10" / "s3"
    for seed, acc in enumerate(accuracies):
        run = sweep / f"seed={seed}"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(f"experiment: cnn_cifar10\nseed: {seed}\n")
        (run / "results.json").write_text(json.dumps({"experiment": "cnn_cifar10", "data": data,
                                                      "test": {"accuracy": acc, "loss": 0.7}, "epochs_run": 8,
                                                      "epochs_configured": 10,
                                                      "machine": {"cpu_model": "Xeon", "torch_threads": 2,
                                                                  "device": "cpu", "torch": "2.13.0+cpu"}}))
        (run / "metrics.csv").write_text("epoch,split,loss,accuracy,lr,time\n1,train,1.0,0.6,0.001,1\n"
                                         "1,val,0.9,0.7,,\n")
    write_sweep_summary(sweep, "cnn_cifar10", {"seed": list(range(len(accuracies)))},
                        [{"seed": s} for s in range(len(accuracies))], {f"seed={s}": "done"
                                                                         for s in range(len(accuracies))})
    return sweep


def test_a_sweep_summary_and_dla_verdicts_judge_its_configs(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    sweep = _fake_sweep(tmp_path, [0.7983, 0.7993, 0.7975], FULL)
    summary = (sweep / "summary.md").read_text()
    assert "## Against the lab reports" in summary and RULE in summary
    assert "Budget: 10 epochs configured, 8 run (early stopping). Machine: Xeon, 2 threads, cpu, torch 2.13.0+cpu." \
        in summary
    (line,) = [ln for ln in summary.splitlines() if ln.startswith("| 3 | 3.1 ID model")]
    p = stats.ttest_1samp([0.7983, 0.7993, 0.7975], 0.7679).pvalue
    assert "| 76.79% | 79.84% ± 0.09% (3) |" in line and f"**beaten** (t-test p = {p:.2g})" in line
    assert sweep_verdicts(sweep)[1][0]["verdict"] == "beaten"
    code, out, err = run_cli(capsys, "verdicts", str(tmp_path))
    assert code == 0, err
    assert out.startswith("# Against the lab reports") and "cnn_cifar10/s3: cifar10" in out and "**beaten**" in out


def test_dla_verdicts_says_when_nothing_is_comparable_and_refuses_a_missing_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_sweep(tmp_path, [0.9], {**FULL, "name": "fashion_mnist"})
    code, out, _ = run_cli(capsys, "verdicts", str(tmp_path))
    assert code == 0 and "**not comparable** (measured on fashion_mnist, the report on cifar10)" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, _ = run_cli(capsys, "verdicts", str(empty))
    assert code == 0 and out.startswith("no finished sweep of an experiment with published numbers")
    from ..conftest import one_line_error

    one_line_error(capsys, ["verdicts", str(tmp_path / "nope")], "is not a folder")
