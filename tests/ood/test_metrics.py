"""OOD metrics against scikit-learn's, on random, tied, tiny and degenerate score sets.

Convention under test: higher score = more in-distribution, ID is the positive class (label 1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from dla.errors import DlaError
from dla.ood import fpr_at_tpr, metrics, pr_curve, roc_curve
from dla.ood.metrics import OODError

TOL = 1e-9


def _labels_scores(ids: np.ndarray, oods: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, oods = np.asarray(ids, dtype=np.float64), np.asarray(oods, dtype=np.float64)
    return np.r_[np.ones(ids.size), np.zeros(oods.size)], np.r_[ids, oods]


def _sk_fpr95(y: np.ndarray, s: np.ndarray, drop_intermediate: bool) -> float:
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=drop_intermediate)
    return float(fpr[np.argmax(tpr >= 0.95)])


def _sklearn(ids: np.ndarray, oods: np.ndarray) -> dict[str, float]:
    y, s = _labels_scores(ids, oods)
    return {
        "auroc": skm.roc_auc_score(y, s),
        "aupr_in": skm.average_precision_score(y, s),
        "aupr_out": skm.average_precision_score(1 - y, -s),
        "fpr95": _sk_fpr95(y, s, drop_intermediate=False),
    }


def _assert_matches_sklearn(ids, oods) -> dict[str, float]:
    ours, ref = metrics(ids, oods), _sklearn(ids, oods)
    assert set(ours) == {"auroc", "aupr_in", "aupr_out", "fpr95"}
    for k in ref:
        assert isinstance(ours[k], float)
        assert ours[k] == pytest.approx(ref[k], abs=TOL), (k, ours[k], ref[k])
    return ours


def _has_id_ood_tie(ids, oods) -> bool:
    return bool(np.intersect1d(np.asarray(ids, dtype=np.float64), np.asarray(oods, dtype=np.float64)).size)


# ---- random inputs -------------------------------------------------------------------------------------------

CASES = {
    "separated_gaussians": lambda r: (r.normal(1.0, 1.0, r.integers(1, 400)), r.normal(0.0, 1.0, r.integers(1, 400))),
    "same_distribution": lambda r: (r.normal(size=r.integers(1, 300)), r.normal(size=r.integers(1, 300))),
    "imbalanced": lambda r: (r.normal(0.5, 1.0, 1000), r.normal(0.0, 1.0, 7)),
    "softmax_like": lambda r: (r.beta(5, 1, 500), r.beta(2, 2, 300)),
    "rounded_ties": lambda r: (np.round(r.normal(0.3, 1, 300), 1), np.round(r.normal(0, 1, 200), 1)),
    "integer_ties": lambda r: (r.integers(0, 4, 200).astype(float), r.integers(0, 3, 50).astype(float)),
}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("case", CASES)
def test_random_inputs_match_sklearn(case: str, seed: int) -> None:
    ids, oods = CASES[case](np.random.default_rng(seed))
    _assert_matches_sklearn(ids, oods)


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
ties = st.integers(-3, 3).map(float)  # a small range: heavy ties, within and across the two sets
score_lists = st.one_of(st.lists(finite, min_size=1, max_size=60), st.lists(ties, min_size=1, max_size=60))


@settings(max_examples=300, deadline=None)
@given(ids=score_lists, oods=score_lists)
def test_hypothesis_matches_sklearn(ids: list[float], oods: list[float]) -> None:
    ours = _assert_matches_sklearn(ids, oods)
    y, s = _labels_scores(ids, oods)
    # FPR@95 as read off sklearn's *default* (drop_intermediate=True) roc_curve whenever no ID score ties an OOD one.
    if not _has_id_ood_tie(ids, oods):
        assert ours["fpr95"] == _sk_fpr95(y, s, drop_intermediate=True)
    # AUROC is the Mann-Whitney probability, counted pair by pair.
    a, b = np.asarray(ids)[:, None], np.asarray(oods)[None, :]
    assert ours["auroc"] == pytest.approx(np.mean((a > b) + 0.5 * (a == b)), abs=TOL)


@settings(max_examples=100, deadline=None)
@given(ids=score_lists, oods=score_lists, tpr=st.floats(0.01, 1.0))
def test_fpr_at_any_tpr_matches_sklearn_curve(ids: list[float], oods: list[float], tpr: float) -> None:
    y, s = _labels_scores(ids, oods)
    fpr, tprs, _ = skm.roc_curve(y, s, drop_intermediate=False)
    assert fpr_at_tpr(ids, oods, tpr) == fpr[np.argmax(tprs >= tpr)]


# ---- edge cases ----------------------------------------------------------------------------------------------


def test_perfectly_separable() -> None:
    m = _assert_matches_sklearn([0.9, 0.8, 0.7], [0.1, 0.2, 0.3, 0.6])
    assert m == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}


def test_reversed() -> None:
    m = _assert_matches_sklearn([0.1, 0.2], [0.8, 0.9, 0.7])
    assert m["auroc"] == 0.0 and m["fpr95"] == 1.0


def test_all_tied() -> None:
    m = _assert_matches_sklearn([0.5] * 7, [0.5] * 3)
    # One threshold accepts everything: precision is the class fraction, every OOD sample is accepted.
    assert m == {"auroc": 0.5, "aupr_in": pytest.approx(0.7), "aupr_out": pytest.approx(0.3), "fpr95": 1.0}


def test_tie_across_sets_counts_half() -> None:
    # Pairs: (2 > 1), (2 == 2) -> (1 + 0.5) / 2.
    assert metrics([2.0], [1.0, 2.0])["auroc"] == 0.75


def test_fpr95_uses_the_exact_crossing_under_ties() -> None:
    # 20 scores, each shared by one ID and one OOD sample: at threshold 1, 19/20 = 95% of ID is kept and 19/20 of
    # OOD accepted. sklearn's default roc_curve drops that point as collinear and would read 1.0 instead.
    ids = oods = np.arange(20.0)
    y, s = _labels_scores(ids, oods)
    assert metrics(ids, oods)["fpr95"] == 0.95 == _sk_fpr95(y, s, drop_intermediate=False)
    assert _sk_fpr95(y, s, drop_intermediate=True) == 1.0


@pytest.mark.parametrize(("ids", "oods"), [([1.0], [0.0]), ([0.0], [1.0]), ([0.0], [0.0]), ([3.0], [1.0, 5.0])])
def test_tiny_sets(ids: list[float], oods: list[float]) -> None:
    _assert_matches_sklearn(ids, oods)


def test_integer_scores_in_a_small_range() -> None:
    r = np.random.default_rng(0)
    for _ in range(50):
        _assert_matches_sklearn(r.integers(0, 3, r.integers(1, 30)), r.integers(-1, 2, r.integers(1, 30)))


def test_accepts_tensors_arrays_and_lists() -> None:
    r = np.random.default_rng(1)
    ids, oods = np.round(r.normal(1, 1, 50), 2), np.round(r.normal(0, 1, 40), 2)
    ref = metrics(ids, oods)
    assert metrics(ids.tolist(), oods.tolist()) == ref
    assert metrics(torch.from_numpy(ids), torch.from_numpy(oods)) == ref
    assert metrics(torch.tensor(ids, requires_grad=True), oods) == ref  # a score straight from a model
    # float32 tensors: the same as their float64 values
    ids32, oods32 = torch.tensor(ids, dtype=torch.float32), torch.tensor(oods, dtype=torch.float32)
    assert metrics(ids32, oods32) == metrics(ids32.double().numpy(), oods32.double().numpy())


# ---- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ids", "oods", "which"), [([], [0.1], "id_scores"), ([0.1], np.array([]), "ood_scores")])
def test_single_class_raises(ids, oods, which: str) -> None:
    with pytest.raises(OODError, match=f"{which} is empty.*single class"):
        metrics(ids, oods)


def test_non_finite_raises_with_count_and_where() -> None:
    with pytest.raises(OODError, match=r"ood_scores has 2 non-finite value\(s\).*out of 4, at index 1, 3"):
        metrics([0.1, 0.2], [0.0, float("nan"), 0.3, float("inf")])
    with pytest.raises(OODError, match="id_scores has 1 non-finite"):
        metrics(torch.tensor([float("nan")]), [0.0])


def test_not_1d_raises() -> None:
    with pytest.raises(OODError, match=r"1-D.*shape \(2, 2\)"):
        metrics(np.zeros((2, 2)), [0.0])
    with pytest.raises(OODError, match=r"1-D.*shape \(\)"):
        metrics(0.5, [0.0])


def test_non_numbers_raise() -> None:
    with pytest.raises(OODError, match="must be numbers"):
        metrics(["a", "b"], [0.0])


def test_errors_are_dla_errors() -> None:
    assert issubclass(OODError, DlaError)
    with pytest.raises(OODError, match="tpr must be in"):
        fpr_at_tpr([1.0], [0.0], 0.0)
    with pytest.raises(OODError, match="positive must be"):
        pr_curve([1.0], [0.0], positive="both")  # type: ignore[arg-type]


# ---- curves --------------------------------------------------------------------------------------------------

_r2, _r3 = np.random.default_rng(2), np.random.default_rng(3)
CURVE_CASES = [
    (np.array([0.9, 0.4, 0.4, 0.7]), np.array([0.4, 0.1, 0.8])),
    (np.round(_r2.normal(0.5, 1.0, 200), 1), np.round(_r2.normal(0.0, 1.0, 150), 1)),
    (_r3.normal(1.0, 1.0, 100), _r3.normal(0.0, 1.0, 120)),
    (np.arange(20.0), np.arange(20.0)),
    (np.array([1.0]), np.array([0.0])),
    (np.full(5, 0.5), np.full(3, 0.5)),
]


@pytest.mark.parametrize("drop", [True, False])
@pytest.mark.parametrize("case", range(len(CURVE_CASES)))
def test_roc_curve_equals_sklearn(case: int, drop: bool) -> None:
    ids, oods = CURVE_CASES[case]
    y, s = _labels_scores(ids, oods)
    ours, ref = roc_curve(ids, oods, drop_intermediate=drop), skm.roc_curve(y, s, drop_intermediate=drop)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=TOL)


@pytest.mark.parametrize("drop", [False, True])
@pytest.mark.parametrize("positive", ["id", "ood"])
@pytest.mark.parametrize("case", range(len(CURVE_CASES)))
def test_pr_curve_equals_sklearn(case: int, positive: str, drop: bool) -> None:
    ids, oods = CURVE_CASES[case]
    y, s = _labels_scores(ids, oods)
    ref = skm.precision_recall_curve(y, s, drop_intermediate=drop)
    if positive == "ood":
        ref = skm.precision_recall_curve(1 - y, -s, drop_intermediate=drop)
    ours = pr_curve(ids, oods, positive=positive, drop_intermediate=drop)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=TOL)
    # The step-wise area under our curve is the metric.
    precision, recall, _ = ours
    key = "aupr_in" if positive == "id" else "aupr_out"
    assert -np.sum(np.diff(recall) * precision[:-1]) == pytest.approx(metrics(ids, oods)[key], abs=TOL)


@settings(max_examples=100, deadline=None)
@given(ids=score_lists, oods=score_lists)
def test_hypothesis_curves_equal_sklearn(ids: list[float], oods: list[float]) -> None:
    y, s = _labels_scores(ids, oods)
    for ours, ref in zip(roc_curve(ids, oods), skm.roc_curve(y, s), strict=True):
        np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL)
    for ours, ref in zip(pr_curve(ids, oods), skm.precision_recall_curve(y, s), strict=True):
        np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL)
    # AUROC is the trapezoid area under the curve.
    fpr, tpr, _ = roc_curve(ids, oods)
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics(ids, oods)["auroc"], abs=TOL)
