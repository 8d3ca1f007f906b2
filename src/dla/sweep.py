"""`dla sweep`: a grid of normal runs, then sweep.csv, a mean ± std summary and overlay plots.

Axes come from the experiment's `sweep:` section and from `key=v1,v2` arguments; `key=value` arguments
with one value apply to every point (and narrow an axis of the same key to that value). A `variant` axis
picks named bundles of overrides from the experiment's `variants:` section. Each point is an ordinary run
folder named after its values, so a sweep interrupted half-way is continued by running the same command with
the same --name: finished points are skipped and unfinished ones resume from their last checkpoint.
"""

from __future__ import annotations

import csv
import itertools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dla.config import ConfigError, load_config, parse_override, read_experiment
from dla.data.files import atomic_write
from dla.distributed import launched_main
from dla.report.gradflow import plot_gradflow, read_gradflow
from dla.report.plots import plot_overlay
from dla.report.tables import METRICS, OPTIONAL, mean_std_table
from dla.runs import RunDir
from dla.tasks import run_experiment
from dla.tracking import read_metrics
from dla.train.loop import TrainingDiverged


def split_args(args: Sequence[str]) -> tuple[dict[str, list[Any]], list[str]]:
    """'a=1,2' -> an axis; 'a=1' (or a YAML list 'a=[1,2]') -> a fixed override."""
    axes: dict[str, list[Any]] = {}
    fixed: list[str] = []
    for arg in args:
        key, _value = parse_override(arg)
        raw = arg.split("=", 1)[1].strip()
        if "," in raw and not raw.startswith(("[", "{")):
            axes[key] = [parse_override(f"{key}={v}")[1] for v in raw.split(",")]
        else:
            fixed.append(arg)
    return axes, fixed


def _value_text(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def point_name(point: dict[str, Any]) -> str:
    """'model.depth=4,model.residual=true,seed=0' -> 'depth=4,residual=true,seed=0'."""
    leaves = [k.rsplit(".", 1)[-1] for k in point]
    keys = leaves if len(set(leaves)) == len(leaves) else list(point)
    return ",".join(f"{k}={_value_text(v)}" for k, v in zip(keys, point.values(), strict=True))


def point_overrides(point: dict[str, Any], variants: dict[str, Any], sweep_dir: Path) -> list[str]:
    """A point's `key=value` overrides; the `variant` axis expands to its named bundle of overrides.

    String values in a bundle may name the sweep folder and the point's other values, e.g. a distilled student
    finds its teacher at "{sweep}/variant=teacher,seed={seed}".
    """
    out: list[str] = []
    for key, value in point.items():
        if key != "variant":
            out.append(f"{key}={_value_text(value)}")
            continue
        if value not in variants:
            raise ConfigError(f"variant {value!r} is not defined; the experiment's variants are: "
                              f"{', '.join(variants) or 'none'}")
        names = {k.rsplit(".", 1)[-1]: _value_text(v) for k, v in point.items()}
        for k, v in (variants[value] or {}).items():
            if isinstance(v, str):
                try:
                    v = v.format(sweep=sweep_dir, **names)
                except (KeyError, IndexError, ValueError) as exc:
                    raise ConfigError(f"variant {value!r}: {k}={v!r} names {exc}, which is neither 'sweep' nor "
                                      f"a swept key ({', '.join(names)})") from None
            out.append(f"{k}={_value_text(v)}")
    return out


def run_sweep(name: str, args: Sequence[str], out_root: Path, data_root: Path, sweep_name: str = "") -> Path:
    raw = read_experiment(name)
    cli_axes, fixed = split_args(args)
    yaml_axes = raw.get("sweep") or {}
    if not isinstance(yaml_axes, dict):
        raise ConfigError(f"experiment {name!r}: 'sweep' must map dotted keys to lists of values")
    axes = {**{k: (v if isinstance(v, list) else [v]) for k, v in yaml_axes.items()}, **cli_axes}
    for arg in fixed:  # `seed=0` on the command line narrows the experiment's seed axis to that one value
        key, value = parse_override(arg)
        if key in axes:
            axes[key] = [value]
    fixed = [a for a in fixed if parse_override(a)[0] not in axes]
    if not axes:
        raise ConfigError(f"nothing to sweep: experiment {name!r} has no 'sweep:' section and no argument "
                          "has several values (use key=v1,v2)")
    points = [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]
    experiment = load_config(name, fixed).experiment
    sweep_dir = out_root / experiment / (sweep_name or f"sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    # Validate every point before running any, so a typo in the last axis costs nothing.
    configs = [load_config(name, [*fixed, *point_overrides(p, raw.get("variants") or {}, sweep_dir),
                                  f"run_name={point_name(p)}", "sweep={}", "variants={}"]) for p in points]
    sweep_dir.mkdir(parents=True, exist_ok=True)
    print(f"sweep {experiment}: {len(points)} runs over {', '.join(f'{k} ({len(v)})' for k, v in axes.items())} "
          f"-> {sweep_dir}", flush=True)

    status: dict[str, str] = {}
    for i, (_point, cfg) in enumerate(zip(points, configs, strict=True), 1):
        run = RunDir(sweep_dir / cfg.run_name)
        print(f"[{i}/{len(points)}] {cfg.run_name}", flush=True)
        if run.complete:
            status[cfg.run_name] = "done"
            print("  already finished; skipped", flush=True)
            continue
        if run.last.is_file():
            cfg.resume = True
        try:
            run_experiment(cfg, sweep_dir, data_root)
            status[cfg.run_name] = "done"
        except TrainingDiverged as exc:
            status[cfg.run_name] = "diverged"
            print(f"  diverged: {exc}", flush=True)
    if launched_main():  # under torchrun every rank runs each point; rank 0 writes the summary
        write_sweep_summary(sweep_dir, experiment, axes, points, status)
    return sweep_dir


def write_sweep_summary(sweep_dir: Path, experiment: str, axes: dict[str, list[Any]],
                        points: list[dict[str, Any]], status: dict[str, str]) -> None:
    rows: list[dict[str, Any]] = []
    for point in points:
        name = point_name(point)
        run = RunDir(sweep_dir / name)
        res = run.read_results() if run.complete else {}
        test = res.get("test", {})
        rows.append({"run": name, **{k: _value_text(v) for k, v in point.items()},
                     "status": status.get(name, "missing"),
                     **{m: test.get(m) for m in [*METRICS, *OPTIONAL]},
                     "best_epoch": res.get("best_epoch"), "epochs_run": res.get("epochs_run"),
                     "train_seconds": res.get("train_seconds")})
    with atomic_write(sweep_dir / "sweep.csv", "w") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    # Group the points that differ only by seed.
    group_keys = [k for k in axes if k != "seed"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for point, row in zip(points, rows, strict=True):
        label = point_name({k: point[k] for k in group_keys}) if group_keys else experiment
        groups.setdefault(label, []).append(row)
    finished = [(label, [r for r in rs if r["status"] == "done"]) for label, rs in groups.items()]
    n_seeds = len(axes.get("seed", [None]))
    text = (f"# Sweep {experiment} / {sweep_dir.name}\n\nTest set, best checkpoint of each run; mean ± std "
            f"(sample std) over {n_seeds} seed(s); n = finished runs.\n\n"
            + mean_std_table([(label, rs) for label, rs in finished if rs]))
    failed = [r["run"] for r in rows if r["status"] != "done"]
    if failed:
        text += f"\nNot finished (diverged or missing): {', '.join(failed)}\n"
    with atomic_write(sweep_dir / "summary.md", "w") as f:
        f.write(text)

    curves = [(label, [read_metrics(sweep_dir / r["run"] / "metrics.csv") for r in rs]) for label, rs in finished]
    # Colour by the first swept key, dash by the second.
    styles = []
    for _label, rs in finished:
        point = next(p for p in points if point_name(p) == rs[0]["run"]) if rs else {}
        idx = [axes[k].index(point[k]) if point else 0 for k in group_keys[:2]]
        styles.append((idx[0] if idx else 0, idx[1] if len(idx) > 1 else 0))
    (sweep_dir / "plots").mkdir(exist_ok=True)
    for split, metric in (("val", "accuracy"), ("train", "loss")):
        plot_overlay(curves, split, metric, sweep_dir / "plots" / f"{split}_{metric}.png",
                     f"{experiment}: {split} {metric}", styles)
    # Gradient flow side by side: the first finished seed of each config that recorded it.
    flows = [(label, sweep_dir / rs[0]["run"] / "gradflow.csv") for label, rs in finished if rs]
    plot_gradflow([(label, read_gradflow(p)) for label, p in flows if p.is_file()], sweep_dir / "plots")
