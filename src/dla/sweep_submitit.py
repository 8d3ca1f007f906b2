"""`dla sweep --launcher submitit`: the sweep's points as submitit jobs, on SLURM or as local processes.

submitit (Meta's launcher, the one Hydra and many research codebases use) submits each point as a job: on a
machine with `sbatch` its AutoExecutor goes through SLURM, elsewhere it runs local processes; `--submitit
cluster=local` forces that (the tests use it), `--submitit KEY=VALUE` passes any other executor parameter
(`timeout_min=60`, `slurm_partition=gpu`, `gpus_per_node=1`, `cpus_per_task=8`, ...). Each point stays one run
folder, decides resume-or-restart itself under its lock (`dla.sweep.run_point`), and a point that reads
another's folder (a distilled student's teacher) is submitted once that one is done, as with `--jobs`. The
job's logs and pickles go to SWEEP_DIR/submitit/.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dla.errors import ConfigError, DlaError

_CONSTRUCTOR = ("cluster",)  # keys for AutoExecutor(...) itself; the rest go to update_parameters


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    """['cluster=local', 'timeout_min=30'] -> {'cluster': 'local', 'timeout_min': 30} (ints where they parse)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(f"--submitit takes KEY=VALUE, e.g. timeout_min=60 or slurm_partition=gpu; got {item!r}")
        out[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    return out


def make_executor(folder: Path, options: dict[str, Any]) -> Any:
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher submitit needs submitit: pip install 'dla[cluster]' (or pip install "
                          "submitit)") from None
    with warnings.catch_warnings():  # submitit 1.5's plugin lookup imports the deprecated pkg_resources
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        executor = submitit.AutoExecutor(folder=folder, **{k: v for k, v in options.items() if k in _CONSTRUCTOR})
    try:
        executor.update_parameters(**{k: v for k, v in options.items() if k not in _CONSTRUCTOR})
    except (ValueError, TypeError, NameError) as e:  # submitit's own messages name the known parameters
        raise ConfigError(f"--submitit: {' '.join(str(e).split())[:300]}") from None
    return executor


def run_point_job(job: dict[str, Any]) -> str:
    """Inside the submitted job: one point, "done" / "diverged", or the user error as "error: ..."."""
    from dla.config import load_config
    from dla.sweep import run_point
    from dla.train.loop import TrainingDiverged

    try:
        run_point(load_config(job["experiment"], job["overrides"]), Path(job["parent"]), Path(job["data_root"]))
    except TrainingDiverged:
        return "diverged"
    except DlaError as exc:
        return f"error: {' '.join(str(exc).split())}"
    return "done"


def run_with_submitit(todo: Sequence[int], experiment: str, overrides: Sequence[Sequence[str]],
                      names: Sequence[str], deps: Sequence[set[str]], sweep_dir: Path, data_root: Path,
                      options: dict[str, Any], status: dict[str, str], live: Any) -> None:
    """Submit every point whose dependencies are done, wait, repeat; a failed dependency leaves its
    dependents "not run". `status` and `live` are `dla.sweep.run_sweep`'s."""
    from dla.sweep import drop_blocked, mark_not_run

    executor = make_executor(sweep_dir / "submitit", options)
    pending, running = list(todo), {}
    while pending or running:
        drop_blocked(pending, names, deps, status, live, sweep_dir)
        for i in [i for i in pending if all(status.get(d) == "done" for d in deps[i])]:
            pending.remove(i)
            job = {"experiment": experiment, "overrides": list(overrides[i]), "parent": str(sweep_dir),
                   "data_root": str(data_root)}
            running[i] = executor.submit(run_point_job, job)
            live.say(f"-> {names[i]} (submitit job {running[i].job_id})")
        if pending and not running:  # waiting on nothing: a cycle
            mark_not_run(list(pending), pending, names, status, live, sweep_dir)
        for i, job in list(running.items()):
            if job.done():
                del running[i]
                _finish(names[i], job, sweep_dir, status, live)
        time.sleep(0.2)


def _finish(name: str, job: Any, sweep_dir: Path, status: dict[str, str], live: Any) -> None:
    try:
        state = job.result()
    except Exception as exc:  # the job crashed (a bug, a node failure): submitit re-raises it here
        state = f"error: {type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    status[name] = "done" if state == "done" else "diverged" if state == "diverged" else "failed"
    live.finished(name, status[name], sweep_dir / name)
    if status[name] == "failed":
        live.say(f"  {name} failed: {state}")
