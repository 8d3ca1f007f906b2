"""`dla lab N --budget B`: every step of a lab (`dla.labs.plan`) in order, resumable, then one HTML lab report.

Each step is run as the `dla` command it is (`dla.cli.main`), so it prints, checks and fails exactly as typed by
hand. Resuming: sweep steps skip their finished points themselves; an attack / ood / explain step is skipped when
`<out>/labs/lab<N>-<budget>/steps.json` records it done with the same command line on the same finished runs
(a sweep that gained or retrained runs is evaluated again). A failed step stops the lab with one line; the same
command continues from that step.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dla.errors import DlaError
from dla.labs.plan import LabPlan, Step, load_plan


def lab_folder(out: Path, plan: LabPlan) -> Path:
    return out / "labs" / plan.sweep_name


def _finished_runs_digest(sweep: Path) -> str:
    """Changes when the sweep's finished runs do (a new seed, a resumed or retrained run)."""
    from dla.report.collect import sweep_runs

    h = hashlib.sha256()
    for run in sweep_runs(sweep)[0] if sweep.is_dir() else []:  # run folders only, not the sweep's ood/ or attacks/
        h.update(run.name.encode() + b"\0" + (run / "results.json").read_bytes() + b"\0")
    return h.hexdigest()


def _key(argv: list[str], step: Step, out: Path, plan: LabPlan) -> str:
    sweep = out / step.experiment / plan.sweep_name
    return hashlib.sha256(json.dumps([argv, _finished_runs_digest(sweep)]).encode()).hexdigest()


def _load_done(path: Path) -> set[str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()  # absent or damaged: every evaluation step runs again
    return {k for k in data.get("done", []) if isinstance(k, str)} if isinstance(data, dict) else set()


def _save_done(path: Path, done: set[str]) -> None:
    from dla.io import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"done": sorted(done)})


def run_lab(lab: int, budget: str, out: Path, data_root: str | None = None,
            log: Callable[[str], Any] = print) -> Path:
    """Run lab `lab` on `budget` under `out` (as `dla sweep --out`); returns the lab report's path."""
    from dla.cli import main
    from dla.labs.report import write_lab_report

    plan = load_plan(lab, budget)
    folder = lab_folder(out, plan)
    done = _load_done(folder / "steps.json")
    n = len(plan.steps)
    for i, step in enumerate(plan.steps, 1):
        argv = step.argv(out, plan.sweep_name, plan.common) + (["--data-root", data_root] if data_root else [])
        key = _key(argv, step, out, plan) if step.command != "sweep" else ""
        if key and key in done:
            log(f"lab {lab} step {i}/{n}: dla {' '.join(argv)} (done before: skipped)")
            continue
        log(f"lab {lab} step {i}/{n}: dla {' '.join(argv)}")
        code = main(argv)
        if code != 0:
            raise DlaError(f"lab {lab} ({budget}) stopped at step {i} of {n} (dla {step.command} {step.experiment}): "
                           "the line above says why; the same `dla lab` command continues from this step")
        if key:
            done.add(key)
            _save_done(folder / "steps.json", done)
    return write_lab_report(plan, out, folder / "report.html")
