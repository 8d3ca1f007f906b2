"""`dla compare RUN_A RUN_B`: the config keys whose values differ (dotted keys), and the two runs' test metrics
side by side. Only the folders' files are read (config.yaml, results.json when the run finished)."""

from __future__ import annotations

from pathlib import Path

from dla.report.collect import NAMING_KEYS, flatten, read_config, read_json, value_text
from dla.report.tables import fmt, header, metric_columns, numeric_metrics


def config_diff(a: dict, b: dict) -> list[tuple[str, str, str]]:
    """(dotted key, value in a, value in b) for every key that differs; '(absent)' where one side lacks it."""
    fa, fb = flatten(a), flatten(b)
    keys = [k for k in dict.fromkeys([*fa, *fb]) if k not in NAMING_KEYS]
    absent = "(absent)"
    out = []
    for k in keys:
        va = value_text(fa[k]) if k in fa else absent
        vb = value_text(fb[k]) if k in fb else absent
        if va != vb:
            out.append((k, va, vb))
    return out


def _columns(rows: list[tuple[str, str, str]], head: tuple[str, str, str]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}".rstrip() for r in [head, *rows]) + "\n"


def _cell(test: dict[str, float] | None, metric: str) -> str:
    if test is None:
        return "unfinished"
    return fmt(metric, test[metric]) if metric in test else ""


def compare_runs(a: Path, b: Path) -> str:
    """The text `dla compare` prints."""
    (ca, _), (cb, _) = read_config(Path(a)), read_config(Path(b))
    names = (Path(a).name, Path(b).name)
    if names[0] == names[1]:
        names = (str(a), str(b))
    diff = config_diff(ca, cb)
    n_keys = len({*flatten(ca), *flatten(cb)} - set(NAMING_KEYS))
    text = f"A: {a}\nB: {b}\n\n"
    if diff:
        text += f"config: {len(diff)} of {n_keys} keys differ\n\n" + _columns(diff, ("key", *names))
    else:
        text += f"config: identical ({n_keys} keys)\n"
    tests = []
    for path in (a, b):
        res = read_json(Path(path) / "results.json")
        tests.append(numeric_metrics((res or {}).get("test") or {}) if res is not None else None)
    metrics = metric_columns([t for t in tests if t])
    if metrics:
        rows = [(header(m), _cell(tests[0], m), _cell(tests[1], m)) for m in metrics]
        text += "\ntest metrics (best checkpoint)\n\n" + _columns(rows, ("metric", *names))
    else:
        text += "\nno test metrics: neither run has finished (no results.json)\n"
    return text
