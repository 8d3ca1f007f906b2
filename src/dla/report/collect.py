"""Read run and sweep folders for `dla report` and `dla compare`: config, results, metrics, and what other commands
(`dla explain`, `dla attack`, `dla ood`, text generation) left inside.

Only files are read: no model is rebuilt and no dataset is touched, so a report works anywhere the folders are.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dla.config import safe_load_yaml
from dla.errors import ConfigError, RunDirError
from dla.report.tables import numeric_metrics

# Keys that name or restart a run rather than change what it trains: never a "difference" between two runs.
NAMING_KEYS = ("run_name", "resume")


@dataclass
class Run:
    path: Path
    config: dict[str, Any]  # config.yaml as loaded (nested)
    config_text: str
    results: dict[str, Any]  # results.json
    metrics: list[dict[str, Any]] = field(default_factory=list)  # metrics.csv rows, numbers parsed

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def test(self) -> dict[str, float]:
        return numeric_metrics(self.results.get("test") or {})

    @property
    def flat_config(self) -> dict[str, Any]:
        return flatten(self.config)


@dataclass
class Collection:
    """What a report is about: one run, several runs, or one sweep (runs grouped by its non-seed axes)."""

    runs: list[Run]
    groups: list[tuple[str, list[Run]]]  # (label, runs that differ only by seed)
    sweep: Path | None = None  # the sweep folder, when the input was one
    unfinished: list[str] = field(default_factory=list)  # run names of a sweep without results.json

    @property
    def single(self) -> Run | None:
        return self.runs[0] if len(self.runs) == 1 and self.sweep is None else None


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'model': {'depth': 2}} -> {'model.depth': 2}; an empty mapping stays a value ({})."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def value_text(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if v is None:
        return "null"
    return str(v)


def read_config(path: Path) -> tuple[dict[str, Any], str]:
    """A run folder's config.yaml (nested dict, text); a one-line error when the folder is not a run."""
    if not path.is_dir():
        raise RunDirError(f"{path} is not a folder; pass a run folder such as runs/mnist_mlp/<run>")
    cfg = path / "config.yaml"
    if not cfg.is_file():
        raise RunDirError(f"{path} is not a run folder (no config.yaml); pass a folder written by `dla run`")
    try:
        text = cfg.read_bytes().decode("utf-8")
        # The safe loader, bounded: an alias bomb in a hand-edited config.yaml would otherwise grow without
        # limit when flattened for the report.
        data = safe_load_yaml(text, str(cfg))
    except (OSError, UnicodeDecodeError, ConfigError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else str(exc).removeprefix(f"{cfg}: ")
        raise RunDirError(f"cannot read {cfg}: {' '.join(str(detail).split())[:200]}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{cfg} does not hold a config mapping; is it a folder written by `dla run`?")
    return data, text


def load_run(path: Path) -> Run:
    """A finished run folder (results.json present)."""
    from dla.runs import RunDir
    from dla.tracking import read_metrics

    config, text = read_config(path)
    results = RunDir(path).read_results()  # the 'incomplete run' message when it is missing
    return Run(path, config, text, results, read_metrics(path / "metrics.csv"))


def _sweep_rows(sweep: Path) -> tuple[list[str], list[dict[str, str]]]:
    """sweep.csv: (the swept keys: the columns between 'run' and 'status', rows)."""
    with open(sweep / "sweep.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        fields = reader.fieldnames or []
    if "run" not in fields or "status" not in fields:
        raise RunDirError(f"{sweep / 'sweep.csv'} has no run/status columns; was it written by `dla sweep`?")
    return fields[fields.index("run") + 1: fields.index("status")], rows


def load_sweep(sweep: Path) -> Collection:
    axes, rows = _sweep_rows(sweep)
    runs, unfinished, groups = [], [], {}
    group_keys = [k for k in axes if k != "seed"]
    for row in rows:
        path = sweep / row["run"]
        if not (path / "results.json").is_file():
            unfinished.append(row["run"])
            continue
        run = load_run(path)
        runs.append(run)
        leaves = [k.rsplit(".", 1)[-1] for k in group_keys]
        names = leaves if len(set(leaves)) == len(leaves) else group_keys
        label = ",".join(f"{n}={row[k]}" for n, k in zip(names, group_keys, strict=True)) or sweep.parent.name
        groups.setdefault(label, []).append(run)
    if not runs:
        raise RunDirError(f"sweep {sweep} has no finished run (none has results.json); finish it with "
                          "`dla sweep EXPERIMENT --name NAME` first")
    return Collection(runs, list(groups.items()), sweep, unfinished)


def group_runs(runs: Sequence[Run]) -> list[tuple[str, list[Run]]]:
    """Runs whose configs differ only in seed (and naming) form a group, labelled by what sets it apart."""
    keyed: dict[tuple[tuple[str, str], ...], list[Run]] = {}
    for run in runs:
        flat = {k: value_text(v) for k, v in run.flat_config.items() if k not in (*NAMING_KEYS, "seed")}
        keyed.setdefault(tuple(sorted(flat.items())), []).append(run)
    if len(keyed) == 1:
        (runs_,) = keyed.values()
        return [(runs_[0].results.get("experiment") or runs_[0].config.get("experiment", "runs"), runs_)]
    configs = [dict(k) for k in keyed]
    differing = [k for k in dict.fromkeys(k for c in configs for k in c)
                 if len({c.get(k) for c in configs}) > 1]
    leaves = [k.rsplit(".", 1)[-1] for k in differing]
    names = leaves if len(set(leaves)) == len(leaves) else differing
    return [(",".join(f"{n}={c.get(k, '')}" for n, k in zip(names, differing, strict=True)), rs)
            for c, rs in zip(configs, keyed.values(), strict=True)]


def collect(paths: Sequence[Path]) -> Collection:
    """Run folders, sweep folders, or folders of runs (e.g. runs/mnist_mlp) -> what to report.

    One sweep folder keeps the sweep's own grouping; anything else is grouped by config (seeds pooled).
    """
    if not paths:
        raise RunDirError("no folder given; pass run or sweep folders, e.g. runs/mnist_mlp/<run>")
    runs: list[Run] = []
    sweeps: list[Collection] = []
    for path in paths:
        if not path.is_dir():
            raise RunDirError(f"{path} is not a folder; pass a run or sweep folder such as runs/mnist_mlp/<run>")
        if (path / "sweep.csv").is_file():
            sweeps.append(load_sweep(path))
        elif (path / "config.yaml").is_file() or (path / "results.json").is_file():
            runs.append(load_run(path))
        else:
            children = sorted(p.parent for p in path.glob("*/results.json") if (p.parent / "config.yaml").is_file())
            if not children:
                raise RunDirError(f"{path} is neither a run folder (config.yaml, results.json) nor a sweep folder "
                                  "(sweep.csv), and holds no finished runs; pass folders written by `dla run` "
                                  "or `dla sweep`")
            runs += [load_run(p) for p in children]
    if len(sweeps) == 1 and not runs:
        return sweeps[0]
    runs += [r for s in sweeps for r in s.runs]
    return Collection(runs, group_runs(runs))


def config_differences(runs: Sequence[Run]) -> list[tuple[str, list[str]]]:
    """(dotted key, each run's value as text) for every config key whose value is not the same in all runs."""
    flats = [{k: value_text(v) for k, v in r.flat_config.items() if k not in NAMING_KEYS} for r in runs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    missing = "(absent)"
    return [(k, [f.get(k, missing) for f in flats]) for k in keys if len({f.get(k, missing) for f in flats}) > 1]


# ---------------------------------------------------------------------------------------------------------------
# Sweep folders for the commands that evaluate trained runs (`dla attack`, `dla ood`, `dla explain`)


def is_sweep_dir(path: Path) -> bool:
    """A folder of run folders (a sweep), not itself a run: no config.yaml, some subfolder with one."""
    return path.is_dir() and not (path / "config.yaml").is_file() and any(
        (p / "config.yaml").is_file() for p in path.iterdir() if p.is_dir())


def sweep_runs(sweep_dir: Path) -> tuple[list[Path], list[Path]]:
    """(finished run folders, unfinished ones) directly under a sweep folder, in the sweep's order (sweep.csv's
    rows, so the table lists configs as the experiment does: standard first), then by name."""
    order: dict[str, int] = {}
    if (sweep_dir / "sweep.csv").is_file():
        with open(sweep_dir / "sweep.csv", newline="") as f:
            order = {row.get("run", ""): i for i, row in enumerate(csv.DictReader(f))}
    runs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and (p / "config.yaml").is_file()),
                  key=lambda p: (order.get(p.name, len(order)), p.name))
    return [p for p in runs if (p / "results.json").is_file()], [p for p in runs if not (p / "results.json").is_file()]


def finished_sweep_runs(sweep_dir: Path) -> tuple[list[Path], list[Path]]:
    """`sweep_runs`, or one line when no run of the sweep has finished."""
    finished, unfinished = sweep_runs(sweep_dir)
    if not finished:
        raise RunDirError(f"sweep {sweep_dir} has no finished run (none has results.json); finish it with "
                          "`dla sweep EXPERIMENT --name NAME` first")
    return finished, unfinished


def group_name(run_name: str) -> str:
    """'variant=adversarial,seed=2' -> 'variant=adversarial': the sweep's config, without the seed."""
    return ",".join(p for p in run_name.split(",") if not p.startswith("seed=")) or "all"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object, or None when the file is missing or unreadable (see runs.read_json_mapping)."""
    from dla.runs import read_json_mapping

    try:
        return read_json_mapping(path)
    except RunDirError:
        return None


def read_jsons(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The JSON objects among these files, in order, skipping the missing or unreadable ones (read_json)."""
    return [r for r in map(read_json, paths) if r]
