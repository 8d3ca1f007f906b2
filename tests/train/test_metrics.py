"""Our metrics against scikit-learn's, on random, skewed and degenerate label sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from dla.train.metrics import MetricAccumulator, classification_metrics, confusion_matrix, topk_correct


def _sk(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": skm.accuracy_score(y, p),
        "precision": skm.precision_score(y, p, average="macro", zero_division=0),
        "recall": skm.recall_score(y, p, average="macro", zero_division=0),
        "f1": skm.f1_score(y, p, average="macro", zero_division=0),
    }


CASES = {
    "random": lambda r: (r.integers(0, 10, 500), r.integers(0, 10, 500)),
    "mostly_right": lambda r: (lambda y: (y, np.where(r.random(500) < 0.9, y, r.integers(0, 10, 500))))(
        r.integers(0, 10, 500)),
    "class_never_predicted": lambda r: (r.integers(0, 5, 200), r.integers(0, 4, 200)),
    "class_absent_from_labels": lambda r: (r.integers(0, 3, 200), r.integers(0, 6, 200)),
    "single_class": lambda r: (np.zeros(50, dtype=int), np.zeros(50, dtype=int)),
    "all_wrong": lambda r: (np.zeros(50, dtype=int), np.ones(50, dtype=int)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn(case: str, seed: int) -> None:
    y, p = CASES[case](np.random.default_rng(seed))
    k = 10
    cm = confusion_matrix(torch.as_tensor(y), torch.as_tensor(p), k)
    np.testing.assert_array_equal(cm.numpy(), skm.confusion_matrix(y, p, labels=list(range(k))))
    ours, ref = classification_metrics(cm), _sk(y, p)
    for name in ref:
        assert ours[name] == pytest.approx(ref[name], abs=1e-12), name


def test_accumulator_over_batches_equals_whole_and_topk_matches_sklearn() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1000, 20, generator=g)
    y = torch.randint(0, 20, (1000,), generator=g)
    acc = MetricAccumulator(20)
    for i in range(0, 1000, 128):  # ragged last batch on purpose
        sl = slice(i, i + 128)
        acc.update(torch.nn.functional.cross_entropy(logits[sl], y[sl]), logits[sl], y[sl])
    out = acc.compute()
    assert out["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-5)
    ref = _sk(y.numpy(), logits.argmax(1).numpy())
    for name in ref:
        assert out[name] == pytest.approx(ref[name], abs=1e-12)
    top5 = skm.top_k_accuracy_score(y.numpy(), logits.numpy(), k=5, labels=list(range(20)))
    assert out["top5"] == pytest.approx(top5)
    assert topk_correct(logits, y, 5) == round(top5 * 1000)


def test_top5_only_reported_for_many_classes() -> None:
    acc = MetricAccumulator(10)
    acc.update(torch.tensor(0.0), torch.randn(4, 10), torch.tensor([0, 1, 2, 3]))
    assert "top5" not in acc.compute()
