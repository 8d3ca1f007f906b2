"""Every registered detector honours the detector contract; bad requests are one line.

A new `@register_detector` module in dla/ood/detectors/ enrols itself here: no edit to this file is needed.
"""

from __future__ import annotations

import pytest
import torch

from dla.ood import OODError, metrics
from dla.ood.detectors import Detector, detector_names, make_detector
from dla.ood.features import FeatureSet

from .features_toy import D, id_set, make, ood_set


def _fitted(name: str) -> Detector:
    detector = make_detector(name)
    return detector.fit(id_set()) if detector.needs_fit else detector


def _one_line(exc: pytest.ExceptionInfo[OODError], *needles: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and all(n in text for n in needles), text


def test_the_built_in_detectors_are_registered() -> None:
    assert {"mahalanobis", "knn", "vim", "react", "dice", "ash", "entropy", "gen"} <= set(detector_names())


@pytest.mark.parametrize("name", detector_names())
def test_detector_contract(name: str) -> None:
    detector = _fitted(name)
    test = id_set(60, seed=7)
    before = (test.features.clone(), test.logits.clone())
    s = detector.score(test)
    assert s.shape == (60,) and s.dtype == torch.float32 and s.device.type == "cpu" and torch.isfinite(s).all()
    assert torch.equal(test.features, before[0]) and torch.equal(test.logits, before[1])  # inputs untouched
    # Sample i's score is its own: scoring in two parts gives the same scores (no batch statistics). A detector
    # that runs the network again inherits its float32 forward's last-bit dependence on the batch size (the SIMD
    # and remainder paths of elementwise kernels), magnified by the Mahalanobis precision: 1e-5, not 1e-6.
    parts = [test.select(slice(0, 25)), test.select(slice(25, None))]
    tol = 1e-5 if detector.needs_inputs else 1e-6
    torch.testing.assert_close(torch.cat([detector.score(p) for p in parts]), s, rtol=tol, atol=tol)
    assert torch.equal(detector.score(test), s)  # deterministic
    assert detector.score(make(torch.empty(0, D))).shape == (0,)


@pytest.mark.parametrize("name", detector_names())
def test_higher_means_in_distribution(name: str) -> None:
    detector = _fitted(name)
    m = metrics(detector.score(id_set(200, seed=5)).double().numpy(), detector.score(ood_set()).double().numpy())
    assert m["auroc"] > 0.75, m  # the toy OOD features are from none of the clusters


@pytest.mark.parametrize("name", [n for n in detector_names() if make_detector(n).needs_fit])
def test_scoring_before_fit_is_one_line(name: str) -> None:
    with pytest.raises(OODError) as exc:
        make_detector(name).score(id_set(8))
    _one_line(exc, name, "fitted before", ".fit(")


@pytest.mark.parametrize("name", [n for n in detector_names() if make_detector(n).needs_fit])
def test_bad_training_sets_are_one_line(name: str) -> None:
    with pytest.raises(OODError) as exc:
        make_detector(name).fit(make(torch.empty(0, D), torch.empty(0, dtype=torch.long)))
    _one_line(exc, name, "empty feature set")
    train = id_set()
    keep = train.labels != 2
    with pytest.raises(OODError) as exc:
        make_detector(name).fit(make(train.features[keep], train.labels[keep]))
    _one_line(exc, name, "class 2 has no training sample")
    with pytest.raises(OODError) as exc:
        make_detector(name).fit(make(train.features))
    _one_line(exc, name, "training labels")


@pytest.mark.parametrize("name", [n for n in detector_names() if make_detector(n).needs_fit])
def test_features_of_another_width_are_one_line(name: str) -> None:
    detector = _fitted(name)
    wide = torch.rand(5, D + 3)
    h = id_set().head
    other = FeatureSet(wide, torch.zeros(5, h.weight.shape[0]), type(h)(torch.zeros(h.weight.shape[0], D + 3), h.bias))
    with pytest.raises(OODError) as exc:
        detector.score(other)
    _one_line(exc, name, f"{D}-dim", f"{D + 3}-dim")


@pytest.mark.parametrize("name", detector_names())
def test_logits_only_models(name: str) -> None:
    # A model without penultimate(x): logit detectors score, feature detectors say why they cannot.
    test = id_set(10)
    logits_only = FeatureSet(None, test.logits, None)
    detector = make_detector(name)
    if detector.needs_features:
        with pytest.raises(OODError) as exc:
            if detector.needs_fit:
                detector.fit(FeatureSet(None, test.logits, None, test.labels))
            else:
                detector.score(logits_only)
        _one_line(exc, name, "penultimate")
    else:
        assert torch.equal(detector.score(logits_only), detector.score(test))


def test_unknown_detectors_and_options_are_one_line() -> None:
    with pytest.raises(OODError) as exc:
        make_detector("nearest")
    _one_line(exc, "unknown OOD detector 'nearest'", "knn")
    with pytest.raises(OODError) as exc:
        make_detector("knn", neighbours=5)
    _one_line(exc, "no option 'neighbours'", "k")
    for name, options, needle in [("knn", {"k": 0}, "k must be"), ("react", {"percentile": 90}, "0.9 for 90%"),
                                  ("dice", {"p": -0.1}, "p is a fraction"), ("gen", {"gamma": 0}, "gamma"),
                                  ("vim", {"d": 0}, "d must be")]:
        with pytest.raises(OODError) as exc:
            make_detector(name, **options)
        _one_line(exc, name, needle)
    with pytest.raises(OODError) as exc:
        make_detector("knn", k=1000).fit(id_set())
    _one_line(exc, "k=1000", "400")
    with pytest.raises(OODError) as exc:
        make_detector("vim", d=D).fit(id_set())
    _one_line(exc, f"d={D}", "no residual")
