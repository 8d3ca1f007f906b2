"""Threshold-free OOD metrics: AUROC, AUPR-in, AUPR-out and FPR@95, scikit-learn's numbers without scikit-learn.

Convention (docs/ARCHITECTURE.md, "Conventions"): a score is higher for inputs that look more in-distribution, and the
in-distribution (ID) set is the positive class. A detector flags "ID" when `score >= threshold`.

Everything is computed from one sort: samples are ordered by decreasing score and grouped by distinct score
value, so every threshold is a distinct score and tied samples cross it together. At the k-th threshold
`tps[k]` ID samples and `fps[k]` OOD samples score at or above it; every metric below is a sum over these
counts, exact in float64 up to 2**53 samples. Tests compare each number with scikit-learn's to 1e-9.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from dla.errors import DlaError

ScoresLike = torch.Tensor | np.ndarray | Sequence[float]


class OODError(DlaError):
    """OOD scores, or a request for them, cannot be used as given."""


def _as_scores(values: ScoresLike, name: str) -> np.ndarray:
    """A 1-D float64 copy of `values`, or one `OODError` line saying what is wrong and how to fix it."""
    if isinstance(values, torch.Tensor):
        arr = values.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise OODError(
                f"{name} must be numbers (a 1-D tensor, array or list); got {type(values).__name__}: {e}"
            ) from None
    if arr.ndim != 1:
        raise OODError(f"{name} must be 1-D, one score per sample; got shape {tuple(arr.shape)}: flatten it first")
    if arr.size == 0:
        raise OODError(
            f"{name} is empty: the metrics are undefined for a single class; pass at least one ID and one OOD score"
        )
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        shown = ", ".join(str(int(i)) for i in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise OODError(
            f"{name} has {bad.size} non-finite value(s) (NaN/inf) out of {arr.size}, at index {shown}: "
            "fix or drop those samples (a diverged model or an empty input?)"
        )
    return arr


def _counts(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tps, fps, thresholds) at each distinct score, from the highest down (scikit-learn's `_binary_clf_curve`).

    `tps[k]` / `fps[k]` count the positives / negatives with score >= thresholds[k]. Grouping by distinct value
    is what makes ties exact: a threshold cannot split tied samples, so the curve jumps over a tie diagonally.
    """
    s = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-s, kind="stable")  # descending; order within a tie does not matter after grouping
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each group of equal scores
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    return tps, fps, s[last]


def _auroc(tps: np.ndarray, fps: np.ndarray) -> float:
    # Trapezoids between consecutive thresholds; a tie contributes half its ID x OOD pairs (Mann-Whitney U).
    dtp = np.diff(tps, prepend=0.0)
    dfp = np.diff(fps, prepend=0.0)
    twice_area = np.sum(dfp * (2.0 * (tps - dtp) + dtp))  # integer-valued: sum of dfp * (tps_prev + tps)
    return float(twice_area / (2.0 * tps[-1] * fps[-1]))


def _average_precision(tps: np.ndarray, fps: np.ndarray) -> float:
    # Step-wise: sum over thresholds of (recall gain) x (precision there); no trapezoids, which overestimate.
    precision = tps / (tps + fps)
    return float(np.sum(np.diff(tps, prepend=0.0) * precision) / tps[-1])


def _fpr_at(tps: np.ndarray, fps: np.ndarray, tpr: float) -> float:
    k = int(np.argmax(tps / tps[-1] >= tpr))  # first (highest) threshold reaching the target; the last always does
    return float(fps[k] / fps[-1])


def metrics(id_scores: ScoresLike, ood_scores: ScoresLike) -> dict[str, float]:
    """AUROC, AUPR-in, AUPR-out and FPR@95 of a score that is higher for in-distribution inputs.

    ID is the positive class and a sample is called ID when its score is >= a threshold. Inputs are 1-D torch
    tensors, numpy arrays or lists, one score per sample; both sets must be non-empty and finite.

    - `auroc`: P(s_id > s_ood) + 0.5 P(s_id == s_ood) over all ID x OOD pairs (Mann-Whitney U), the area under
      the ROC curve; equals `sklearn.metrics.roc_auc_score(y, s)` with y = 1 for ID. 0.5 is chance.
    - `aupr_in`: average precision with ID positive, sum_k (R_k - R_{k-1}) P_k over distinct thresholds from the
      top (scikit-learn's `average_precision_score(y, s)`, the step-wise sum, not a trapezoid).
    - `aupr_out`: the same with OOD positive and the score negated, `average_precision_score(1 - y, -s)`.
      Its chance level is the OOD fraction, so report both AUPRs when the sets differ in size.
    - `fpr95`: take the highest threshold t at which TPR = #{ID >= t} / #ID is >= 0.95; the value is the
      fraction of OOD samples with score >= t, the OOD inputs still accepted as ID while 95% of ID inputs are
      kept. Lower is better. It is the fpr at the first index with tpr >= 0.95 of
      `sklearn.metrics.roc_curve(y, s, drop_intermediate=False)`, and of the default `roc_curve(y, s)` whenever
      no ID score ties an OOD score. (With such ties the default curve may drop the exact crossing point as
      collinear and read the next one: 20 scores each shared by one ID and one OOD sample give 0.95 here and
      1.0 there.)
    """
    ids, oods = _as_scores(id_scores, "id_scores"), _as_scores(ood_scores, "ood_scores")
    tps, fps, _ = _counts(ids, oods)
    tps_out, fps_out, _ = _counts(-oods, -ids)
    return {
        "auroc": _auroc(tps, fps),
        "aupr_in": _average_precision(tps, fps),
        "aupr_out": _average_precision(tps_out, fps_out),
        "fpr95": _fpr_at(tps, fps, 0.95),
    }


def fpr_at_tpr(id_scores: ScoresLike, ood_scores: ScoresLike, tpr: float = 0.95) -> float:
    """The fraction of OOD samples accepted at the highest threshold that keeps a fraction >= `tpr` of ID samples.

    `metrics(...)["fpr95"]` is `fpr_at_tpr(..., 0.95)`; see `metrics` for the exact definition.
    """
    if not 0.0 < tpr <= 1.0:
        raise OODError(f"tpr must be in (0, 1]; got {tpr!r}: 0.95 asks for 95% of ID samples kept")
    tps, fps, _ = _counts(_as_scores(id_scores, "id_scores"), _as_scores(ood_scores, "ood_scores"))
    return _fpr_at(tps, fps, tpr)


def roc_curve(
    id_scores: ScoresLike, ood_scores: ScoresLike, *, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) with ID positive, as `sklearn.metrics.roc_curve(y, s)` with y = 1 for ID.

    Thresholds decrease from +inf (nothing accepted: the point (0, 0)); point k accepts scores >= thresholds[k].
    `drop_intermediate` drops collinear points, which changes no area but makes plots lighter.
    """
    tps, fps, thresholds = _counts(_as_scores(id_scores, "id_scores"), _as_scores(ood_scores, "ood_scores"))
    if drop_intermediate and tps.size > 2:
        # Keep the ends and every point where the curve bends (a change in slope of either count).
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        tps, fps, thresholds = tps[keep], fps[keep], thresholds[keep]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    return fps / fps[-1], tps / tps[-1], np.r_[np.inf, thresholds]


def pr_curve(
    id_scores: ScoresLike,
    ood_scores: ScoresLike,
    *,
    positive: Literal["id", "ood"] = "id",
    drop_intermediate: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) as `sklearn.metrics.precision_recall_curve`, for AUPR-in or AUPR-out plots.

    `positive="id"`: ID labelled 1 and the score as is (the AUPR-in curve). `positive="ood"`: OOD labelled 1 and
    the score negated (the AUPR-out curve); its thresholds are then on the negated score, a sample counting as
    OOD when `-score >= threshold`. Thresholds increase; the last (precision, recall) = (1, 0) has none.
    """
    ids, oods = _as_scores(id_scores, "id_scores"), _as_scores(ood_scores, "ood_scores")
    if positive == "id":
        tps, fps, thresholds = _counts(ids, oods)
    elif positive == "ood":
        tps, fps, thresholds = _counts(-oods, -ids)
    else:
        raise OODError(f"positive must be 'id' or 'ood'; got {positive!r}")
    if drop_intermediate and tps.size > 2:
        # Keep the first and last threshold of each run of equal recall (a vertical stretch of the plot).
        keep = np.r_[True, np.logical_or(np.diff(tps[:-1]), np.diff(tps[1:])), True]
        tps, fps, thresholds = tps[keep], fps[keep], thresholds[keep]
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1].copy()
