"""`dla ood --option DETECTOR.OPTION=VALUE` (repeatable): a detector's constructor options from the command line.

`--option knn.k=10 --option react.percentile=0.95` -> {"knn": {"k": 10}, "react": {"percentile": 0.95}}. A value
is read as a literal, never evaluated: an integer, a decimal or a fraction a/b (2/255), true / false, or none.
Each detector is then built once with its options, so a value it refuses (k=0, percentile=95) is refused here,
before any run is loaded, in the detector's own words. Every mistake is one line naming what is valid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from dla.ood.metrics import OODError

EXAMPLE = "e.g. --option knn.k=10 --option react.percentile=0.95"


def _with_options() -> str:
    from dla.ood.detectors import detector_defaults, detector_names

    listed = [f"{n} ({', '.join(detector_defaults(n))})" for n in detector_names() if detector_defaults(n)]
    return ", ".join(listed)


def parse_value(text: str) -> int | float | bool | None:
    """'10' -> 10, '0.95' -> 0.95, '2/255' -> 2/255, 'true' / 'false', 'none' -> None; anything else: ValueError."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    try:
        return int(t)
    except ValueError:
        pass
    if t.count("/") == 1:
        a, b = t.split("/")
        v = float(a) / float(b)  # ValueError or ZeroDivisionError for a bad fraction
    else:
        v = float(t)
    if not math.isfinite(v):
        raise ValueError(t)
    return v


def _split(item: str) -> tuple[str, str, str]:
    key, eq, value = item.partition("=")
    detector, dot, option = key.strip().partition(".")
    if not eq or not dot or not detector or not option.strip() or not value.strip():
        raise OODError(f"--option {item!r} must be DETECTOR.OPTION=VALUE, {EXAMPLE}; detectors with options: "
                       f"{_with_options()}")
    return detector, option.strip(), value


def parse_detector_options(items: Sequence[str] | None, methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`--option` items -> {detector: {option: value}}, each checked against the detectors in `methods`."""
    from dla.ood.detectors import detector_defaults, detector_names, make_detector
    from dla.ood.scores import score_names

    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        detector, option, text = _split(item)
        if detector in score_names():
            raise OODError(f"--option {item}: {detector} is a score, not a detector; odin's options are --temperature "
                           f"and --eps, recon's --recon-features and --recon-epochs")
        if detector not in detector_names():
            raise OODError(f"--option {item}: unknown detector {detector!r}; detectors with options: "
                           f"{_with_options()}")
        known = detector_defaults(detector)
        if option not in known:
            raise OODError(f"--option {item}: detector {detector!r} has no option {option!r}; its options: "
                           f"{', '.join(known) or 'none'}")
        if detector not in methods:
            raise OODError(f"--option {item} applies to the {detector} detector; add {detector} to --methods")
        if option in out.get(detector, {}):
            raise OODError(f"--option {detector}.{option} is given twice; give each option once")
        try:
            value = parse_value(text)
        except (ValueError, ZeroDivisionError):
            raise OODError(f"--option {item}: {text.strip()!r} is not a value; use a number (10, 0.95, 2/255), "
                           f"true, false or none (default {detector}.{option}={known[option]!r})") from None
        out.setdefault(detector, {})[option] = value
    for detector, options in out.items():
        try:
            make_detector(detector, **options)  # the detector's own checks (k >= 1, a fraction, ...)
        except OODError as exc:
            given = " ".join(f"--option {detector}.{k}={v}" for k, v in options.items())
            raise OODError(f"{given}: {exc}") from None
    return out
