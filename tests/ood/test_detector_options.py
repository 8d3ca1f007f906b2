"""`dla ood --option DETECTOR.OPTION=VALUE`: parsed as literals, checked against the detectors, one line per mistake."""

from __future__ import annotations

import pytest

from dla.ood import OODError
from dla.ood.detector_options import parse_detector_options, parse_value
from dla.ood.detectors import detector_defaults, detector_names, make_detector
from dla.ood.run import detector_caption, make_request


@pytest.mark.parametrize(("text", "value"), [("10", 10), (" 0.95 ", 0.95), ("2/255", 2 / 255), ("1e-3", 1e-3),
                                             ("true", True), ("False", False), ("none", None), ("-3", -3)])
def test_values_are_literals(text: str, value: object) -> None:
    got = parse_value(text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("text", ["abc", "__import__('os')", "1/0", "nan", "inf", "1/2/3", "[1]", ""])
def test_other_values_are_refused(text: str) -> None:
    with pytest.raises((ValueError, ZeroDivisionError)):
        parse_value(text)


def test_options_reach_the_request_and_the_detectors() -> None:
    req = make_request("noise", "knn,react,mahalanobis_pre",
                       detector_options=["knn.k=10", "react.percentile=0.95", "mahalanobis_pre.eps=1/255"])
    assert req.options_of("knn") == {"k": 10} and req.options_of("vim") == {}
    assert req.options_of("mahalanobis_pre") == {"eps": pytest.approx(1 / 255)}
    assert make_detector("knn", **req.options_of("knn")).options() == {"k": 10}
    assert make_request("noise", "knn").detector_options == ()
    assert detector_caption({"knn": {"k": 10}, "react": {"percentile": 0.95}, "entropy": {}}) == \
        " Detector options: knn k=10; react percentile=0.95."


def test_every_detector_option_has_a_default_it_accepts() -> None:
    for name in detector_names():
        defaults = detector_defaults(name)
        assert make_detector(name, **defaults).options() == defaults, name


@pytest.mark.parametrize(("items", "needles"), [
    (["knnk=1"], ["must be DETECTOR.OPTION=VALUE", "knn (k)", "react (percentile)"]),
    (["knn.k"], ["must be DETECTOR.OPTION=VALUE"]),
    (["knn.=3"], ["must be DETECTOR.OPTION=VALUE"]),
    (["nearest.k=1"], ["unknown detector 'nearest'", "knn (k)", "mahalanobis_pre (eps)"]),
    (["odin.eps=0.001"], ["odin is a score, not a detector", "--eps"]),
    (["knn.neighbours=5"], ["detector 'knn' has no option 'neighbours'", "its options: k"]),
    (["entropy.t=1"], ["detector 'entropy' has no option 't'", "its options: none"]),
    (["dice.p=0.5"], ["applies to the dice detector", "add dice to --methods"]),
    (["knn.k=abc"], ["'abc' is not a value", "2/255", "default knn.k=50"]),
    (["knn.k=__import__('os')"], ["is not a value"]),
    (["knn.k=0"], ["--option knn.k=0", "k must be a positive integer"]),
    (["knn.k=2.5"], ["k must be a positive integer"]),
    (["react.percentile=95"], ["--option react.percentile=95", "0.9 for 90%"]),
    (["mahalanobis_pre.eps=-1"], ["eps must be >= 0"]),
    (["knn.k=5", "knn.k=6"], ["knn.k is given twice"]),
])
def test_bad_options_are_one_line(items: list[str], needles: list[str]) -> None:
    with pytest.raises(OODError) as exc:
        parse_detector_options(items, ["knn", "react", "entropy", "mahalanobis_pre"])
    text = str(exc.value)
    assert "\n" not in text and all(n in text for n in needles), text
