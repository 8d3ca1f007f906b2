"""`dla sweep`: a grid of normal runs, then sweep.csv, a mean ± std summary and overlay plots.

Axes come from the experiment's `sweep:` section and from `key=v1,v2` arguments; `key=value` arguments
with one value apply to every point (and narrow an axis of the same key to that value). A `variant` axis
picks named bundles of overrides from the experiment's `variants:` section. Each point is an ordinary run
folder named after its values, so a sweep interrupted half-way is continued by running the same command with
the same --name: finished points are skipped and unfinished ones resume from their last checkpoint.

`--jobs N` runs N points at once, each in its own process (`python -m dla.sweep JOB`, output in
SWEEP_DIR/logs/<run>.log): one GPU each, round-robin, when CUDA is present, else a share of the CPU cores. A
point whose overrides name another point's run folder (the distilled student and its teacher) starts only
after that point finished. A failed point is reported and the others go on; Ctrl-C stops the workers, whose
atomic checkpoints stay resumable. With --jobs 1 the points run in this process, as they always did.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dla.config import ConfigError, ExperimentConfig, load_config, parse_override, read_experiment
from dla.data.provenance import budget_caption, data_caption, machine_caption
from dla.distributed import launched_main
from dla.errors import DlaError
from dla.io import atomic_write
from dla.report.gradflow import plot_gradflow, read_gradflow
from dla.report.plots import plot_overlay
from dla.report.tables import fmt, header, mean_std_table, metric_columns, numeric_metrics
from dla.report.verdict import verdict_rows, verdict_table
from dla.runs import RunDir, clear_unstarted, held_run_locks, refuse_run_folder, release_run_locks
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
        bundle = variants[value] or {}
        if not isinstance(bundle, dict):
            raise ConfigError(f"variant {value!r} must map dotted keys to values; got {type(bundle).__name__}")
        for k, v in bundle.items():
            if isinstance(v, str):
                v = substitute(v, {"sweep": str(sweep_dir), **names}, f"variant {value!r}: {k}")
            out.append(f"{k}={_value_text(v)}")
    return out


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def substitute(text: str, values: dict[str, str], where: str) -> str:
    """'{sweep}/seed={seed}' with each `{name}` replaced by values[name], literally ('{{' and '}}' are braces).

    Not `str.format`: that follows attribute and index paths (`{sweep.__init__.__globals__[os].environ}`),
    which reach any object and the environment. Only plain names are replaced; anything else is refused.
    """
    def one(m: re.Match[str]) -> str:
        token = m.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = m.group(1)
        if name is None or name not in values:
            raise ConfigError(f"{where}={text!r}: {token!r} is not a placeholder; use {{sweep}} or a swept key "
                              f"({', '.join('{' + n + '}' for n in values if n != 'sweep')}), or {{{{ }}}} for "
                              "a literal brace")
        return values[name]

    return _PLACEHOLDER.sub(one, text)


def point_dependencies(names: Sequence[str], overrides: Sequence[Sequence[str]], sweep_dir: Path) -> list[set[str]]:
    """For each point, the other points whose run folders its overrides name (a distilled student's teacher).

    A value names a point when it is a path inside `sweep_dir` whose first component is that point's run name;
    comparing whole path components keeps 'seed=1' from matching 'seed=10'.
    """
    known = set(names)
    root = sweep_dir.resolve()
    deps: list[set[str]] = []
    for name, ovs in zip(names, overrides, strict=True):
        found: set[str] = set()
        for ov in ovs:
            value = ov.split("=", 1)[1].strip() if "=" in ov else ""
            if not value or ("/" not in value and "\\" not in value):
                continue
            try:
                rel = Path(value).resolve().relative_to(root)
            except (ValueError, OSError):
                continue
            if rel.parts and rel.parts[0] in known and rel.parts[0] != name:
                found.add(rel.parts[0])
        deps.append(found)
    return deps


def dependency_order(names: Sequence[str], deps: Sequence[set[str]]) -> list[int]:
    """Indices of the points in the sweep's order, except that a point comes after every point it depends on."""
    order: list[int] = []
    placed: set[str] = set()
    pending = list(range(len(names)))
    while pending:
        ready = [i for i in pending if deps[i] <= placed]
        if not ready:  # a cycle: keep the given order; the points that cannot start will fail with their message
            ready = pending[:1]
        i = ready[0]
        order.append(i)
        placed.add(names[i])
        pending.remove(i)
    return order


def sweep_axes(name: str, raw: dict[str, Any], args: Sequence[str]) -> tuple[dict[str, list[Any]], list[str]]:
    """(axes, fixed overrides): the YAML's `sweep:` axes, then the command line's (`key=v1,v2` adds or replaces an
    axis; `key=v` narrows an axis of that key to v, or else applies to every point)."""
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
    return axes, fixed


def run_sweep(name: str, args: Sequence[str], out_root: Path, data_root: Path, sweep_name: str = "",
              jobs: int = 1, progress_mode: str = "auto", submitit: dict[str, Any] | None = None) -> Path:
    """Run every point of the sweep (skipping finished ones), then write sweep.csv, summary.md and plots.

    jobs > 1 runs that many points at once, each in its own process (`python -m dla.sweep`), one GPU each
    (round-robin) when several are visible; a point that reads another point's run folder waits for it.
    `submitit` (executor options) submits each point as a submitit job instead (`dla.sweep_submitit`).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs must be a positive number of parallel runs; got {jobs!r}")
    raw = read_experiment(name)
    axes, fixed = sweep_axes(name, raw, args)
    points = [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]
    experiment = load_config(name, fixed).experiment
    sweep_dir = out_root / experiment / (sweep_name or f"sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    # Validate every point before running any, so a typo in the last axis costs nothing.
    overrides = [[*fixed, *point_overrides(p, raw.get("variants") or {}, sweep_dir), f"run_name={point_name(p)}",
                  "sweep={}", "variants={}"] for p in points]
    configs = [load_config(name, ov) for ov in overrides]
    if jobs > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--jobs > 1 starts its own processes; under torchrun / accelerate use --jobs 1")
    names = [cfg.run_name for cfg in configs]
    deps = point_dependencies(names, overrides, sweep_dir)
    order = dependency_order(names, deps)
    refuse_run_folder(sweep_dir)  # before anything is written: `--name tiny` must not fill the run `tiny`'s folder
    sweep_dir.mkdir(parents=True, exist_ok=True)
    print(f"sweep {experiment}: {len(points)} runs over {', '.join(f'{k} ({len(v)})' for k, v in axes.items())} "
          f"-> {sweep_dir}" + (f", {jobs} at a time" if jobs > 1 else ""), flush=True)

    status: dict[str, str] = {}
    live = LiveTable(len(points), progress_mode)
    for i in order:
        if RunDir(sweep_dir / names[i]).complete:
            status[names[i]] = "done"
            live.finished(names[i], "skipped (finished before)", sweep_dir / names[i])
    try:
        if submitit is not None:
            from dla.sweep_submitit import run_with_submitit

            run_with_submitit([i for i in order if names[i] not in status], name, overrides, names, deps,
                              sweep_dir, data_root, submitit, status, live)
        elif jobs == 1:
            _run_in_process([(i, configs[i]) for i in order if names[i] not in status], sweep_dir, data_root,
                            status, live)
        else:
            try:
                _run_in_processes([i for i in order if names[i] not in status], name, overrides, names, deps,
                                  sweep_dir, data_root, jobs, status, live)
            except KeyboardInterrupt:
                raise DlaError(f"sweep interrupted; finished runs are kept and the others resume from their last "
                               f"checkpoint: run the same command with --name {sweep_dir.name}") from None
    finally:
        live.close()
    if launched_main():  # under torchrun every rank runs each point; rank 0 writes the summary
        write_sweep_summary(sweep_dir, experiment, axes, points, status)
    return sweep_dir


class LiveTable:
    """A progress bar over the sweep's points (terminals only) and a table that grows by one plain-text row per
    finished point: name, status, its main test metrics, so a long sweep shows results as they come."""

    def __init__(self, total: int, mode: str = "auto") -> None:
        self.total, self.done = total, 0
        self.header_printed = False
        self.bar = None
        if mode == "on" or (mode == "auto" and sys.stderr.isatty()):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="sweep", unit="run", dynamic_ncols=True, leave=False)

    def say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def finished(self, name: str, state: str, run_dir: Path) -> None:
        self.done += 1
        test: dict[str, float] = {}
        if RunDir(run_dir).complete:
            test = numeric_metrics(RunDir(run_dir).read_results().get("test") or {})
        metrics = [m for m in metric_columns([test]) if m in ("loss", "accuracy", "bpc", "f1", "top5")][:3]
        cells = "  ".join(f"{header(m)} {fmt(m, test[m])}" for m in metrics)
        if not self.header_printed:
            self.say(f"{'#':>7}  {'run':<28} {'status':<12} test")
            self.header_printed = True
        self.say(f"{self.done:>3}/{self.total:<3}  {name:<28} {state:<12} {cells}")
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run_in_process(todo: Sequence[tuple[int, ExperimentConfig]], sweep_dir: Path, data_root: Path,
                    status: dict[str, str], live: LiveTable) -> None:
    for _i, cfg in todo:
        run = RunDir(sweep_dir / cfg.run_name)
        live.say(f"-> {cfg.run_name}")
        before = held_run_locks()
        try:
            run_point(cfg, sweep_dir, data_root)
            status[cfg.run_name] = "done"
        except TrainingDiverged as exc:
            status[cfg.run_name] = "diverged"
            live.say(f"  diverged: {exc}")
        finally:
            release_run_locks(keep=before)
        live.finished(cfg.run_name, status[cfg.run_name], run.path)


def run_point(cfg: ExperimentConfig, sweep_dir: Path, data_root: Path) -> None:
    """One point: resumed from its last checkpoint, or started (again) when it has none. A point interrupted
    before its first checkpoint left a folder with nothing in it to resume; that folder is emptied first, so
    rerunning the same sweep continues, as promised, instead of refusing a folder name the user never chose."""
    run = RunDir(sweep_dir / cfg.run_name)
    cfg.resume = run.last.is_file()
    if not cfg.resume:
        clear_unstarted(run.path)
    run_experiment(cfg, sweep_dir, data_root)


_DIVERGED = 3  # a worker's exit code for TrainingDiverged (2 is a DlaError, as for the CLI)


def _worker_env(slot: int, jobs: int) -> dict[str, str]:
    """The environment of the worker in `slot`: one GPU of those visible (round-robin), or a share of the cores."""
    import torch

    env = dict(os.environ)
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n_gpus:
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()] or \
            [str(i) for i in range(n_gpus)]
        env["CUDA_VISIBLE_DEVICES"] = visible[slot % len(visible)]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    if env.get("OMP_NUM_THREADS", "").isdigit():  # a limit the user set (a shared machine) is kept
        threads = min(threads, int(env["OMP_NUM_THREADS"]))
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run_in_processes(todo: Sequence[int], experiment: str, overrides: Sequence[Sequence[str]],
                      names: Sequence[str], deps: Sequence[set[str]], sweep_dir: Path, data_root: Path, jobs: int,
                      status: dict[str, str], live: LiveTable) -> None:
    """Start up to `jobs` workers; a point starts once every point it depends on is done. Its output goes to
    SWEEP_DIR/logs/<run>.log; a failure is reported with its last line and the other points go on."""
    logs = sweep_dir / "logs"
    logs.mkdir(exist_ok=True)
    pending = list(todo)
    running: dict[int, tuple[int, subprocess.Popen, Any]] = {}  # slot -> (point, process, log file)
    try:
        while pending or running:
            drop_blocked(pending, names, deps, status, live, sweep_dir)
            free = [s for s in range(jobs) if s not in running]
            while free and pending:
                ready = [i for i in pending if all(status.get(d) == "done" for d in deps[i])]
                if not ready:
                    if not running:  # waiting on nothing: a cycle
                        mark_not_run(list(pending), pending, names, status, live, sweep_dir)
                    break
                i, slot = ready[0], free.pop(0)
                pending.remove(i)
                running[slot] = (i, *_start_worker(i, experiment, overrides, names, sweep_dir, data_root, slot,
                                                   jobs, logs))
                live.say(f"-> {names[i]} (process {running[slot][1].pid}, log {logs / (names[i] + '.log')})")
            for slot, (i, proc, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[slot]
                done = proc.returncode == 0 and RunDir(sweep_dir / names[i]).complete
                status[names[i]] = "done" if done else "diverged" if proc.returncode == _DIVERGED else "failed"
                live.finished(names[i], status[names[i]], sweep_dir / names[i])
                if not done:
                    live.say(f"  {names[i]} {status[names[i]]}: {_last_line(logs / (names[i] + '.log'))}")
            time.sleep(0.1)
    except BaseException:  # Ctrl-C or SIGTERM: stop the workers the way Ctrl-C stops a run (last.pt kept)
        _stop([proc for _i, proc, _log in running.values()])
        for _i, _proc, log in running.values():
            log.close()
        raise


def drop_blocked(pending: list[int], names: Sequence[str], deps: Sequence[set[str]], status: dict[str, str],
                 live: LiveTable, sweep_dir: Path) -> None:
    """Take out of `pending`, as "not run", every point a dependency of which ended without finishing."""
    for i in list(pending):
        bad = [d for d in deps[i] if status.get(d, "done") != "done"]  # no status yet: still to run, or running
        if bad:
            mark_not_run([i], pending, names, status, live, sweep_dir)
            live.say(f"  {names[i]} not run: it needs {', '.join(sorted(bad))}, which did not finish")


def mark_not_run(points: Sequence[int], pending: list[int], names: Sequence[str], status: dict[str, str],
                 live: LiveTable, sweep_dir: Path) -> None:
    for i in points:
        pending.remove(i)
        status[names[i]] = "not run"
        live.finished(names[i], "not run", sweep_dir / names[i])


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    """SIGINT (a run saves nothing more and explains how to resume), then SIGTERM for a worker that ignores it
    (started from a shell's background job), then SIGKILL. Checkpoints are written atomically, so whichever
    signal ends a worker, its last.pt is whole and the point resumes from it."""
    for sig, grace in ((signal.SIGINT, 10.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        alive = [p for p in procs if p.poll() is None]
        for p in alive:
            p.send_signal(sig)
        deadline = time.monotonic() + grace
        for p in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))


def _start_worker(i: int, experiment: str, overrides: Sequence[Sequence[str]], names: Sequence[str],
                  sweep_dir: Path, data_root: Path, slot: int, jobs: int, logs: Path) -> tuple[subprocess.Popen, Any]:
    job = {"experiment": experiment, "overrides": list(overrides[i]), "parent": str(sweep_dir),
           "data_root": str(data_root)}  # the worker decides resume or restart, under the point's lock
    # Appended to, so a resumed point's log keeps the part before the interruption; closed when the worker ends.
    log = open(logs / f"{names[i]}.log", "a")  # noqa: SIM115
    # Its own session: Ctrl-C in the terminal reaches the sweep, which stops the workers in order.
    proc = subprocess.Popen([sys.executable, "-m", "dla.sweep", json.dumps(job)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_worker_env(slot, jobs),
                            start_new_session=True)
    return proc, log


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].strip() if lines else "(empty log)"


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so `finally` blocks and atomic writes clean up, as in the CLI


def worker_main(argv: Sequence[str]) -> int:
    """One sweep point in its own process: `python -m dla.sweep '{"experiment": ..., "overrides": [...], ...}'`."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    job = json.loads(argv[0])
    try:
        cfg = load_config(job["experiment"], job["overrides"])
        run_point(cfg, Path(job["parent"]), Path(job["data_root"]))
    except TrainingDiverged as exc:
        print(f"diverged: {exc}", flush=True)
        return _DIVERGED
    except DlaError as exc:
        print(f"dla: error: {' '.join(str(exc).split())}", flush=True)
        return 2
    return 0


def write_sweep_summary(sweep_dir: Path, experiment: str, axes: dict[str, list[Any]],
                        points: list[dict[str, Any]], status: dict[str, str]) -> None:
    rows: list[dict[str, Any]] = []
    results = {}
    for point in points:
        run = RunDir(sweep_dir / point_name(point))
        results[point_name(point)] = run.read_results() if run.complete else {}
    # Columns: whatever numeric test metrics the runs report (accuracy etc., or loss and bpc for a language model).
    metrics = metric_columns([numeric_metrics(r.get("test") or {}) for r in results.values()])
    for point in points:
        name = point_name(point)
        res = results[name]
        test = res.get("test", {})
        rows.append({"run": name, **{k: _value_text(v) for k, v in point.items()},
                     "status": status.get(name, "missing"),
                     **{m: test.get(m) for m in metrics},
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
    text = _summary_text(sweep_dir, experiment, len(axes.get("seed", [None])), rows, results, finished, metrics)
    with atomic_write(sweep_dir / "summary.md", "w") as f:
        f.write(text)
    _sweep_plots(sweep_dir, experiment, axes, points, finished, metrics)


def _summary_text(sweep_dir: Path, experiment: str, n_seeds: int, rows: list[dict[str, Any]],
                  results: dict[str, dict[str, Any]], finished: list[tuple[str, list[dict[str, Any]]]],
                  metrics: list[str]) -> str:
    """summary.md: the caption (data, budget, machine), mean ± std per config, what did not finish, verdicts."""
    done = [res for res in results.values() if res]
    budget, machine = budget_caption(done), machine_caption(done)
    text = (f"# Sweep {experiment} / {sweep_dir.name}\n\nTest set, best checkpoint of each run; mean ± std "
            f"(sample std) over {n_seeds} seed(s); n = finished runs. Data: {data_caption(done)}."
            + (f" Budget: {budget}." if budget else "") + (f" Machine: {machine}." if machine else "") + "\n\n"
            + mean_std_table([(label, rs) for label, rs in finished if rs], metrics or None, mark_best=True))
    failed = [r["run"] for r in rows if r["status"] != "done"]
    if failed:
        text += f"\nNot finished (diverged, failed or missing): {', '.join(failed)}\n"
    verdicts = [v for v in verdict_rows(experiment, [(label, [results[r["run"]] for r in rs])
                                                     for label, rs in finished]) if v["values"]]
    if verdicts:  # the lab reports' numbers for this experiment (dla.report.verdict)
        text += "\n## Against the lab reports\n\n" + verdict_table(verdicts)
    return text


def _sweep_plots(sweep_dir: Path, experiment: str, axes: dict[str, list[Any]], points: list[dict[str, Any]],
                 finished: list[tuple[str, list[dict[str, Any]]]], metrics: list[str]) -> None:
    """Overlaid validation and training curves per config, and the gradient flow side by side."""
    group_keys = [k for k in axes if k != "seed"]
    curves = [(label, [read_metrics(sweep_dir / r["run"] / "metrics.csv") for r in rs]) for label, rs in finished]
    # Colour by the first swept key, dash by the second.
    styles = []
    for _label, rs in finished:
        point = next(p for p in points if point_name(p) == rs[0]["run"]) if rs else {}
        idx = [axes[k].index(point[k]) if point else 0 for k in group_keys[:2]]
        styles.append((idx[0] if idx else 0, idx[1] if len(idx) > 1 else 0))
    (sweep_dir / "plots").mkdir(exist_ok=True)
    val_metric = "accuracy" if not metrics or "accuracy" in metrics else "bpc" if "bpc" in metrics else "loss"
    for split, metric in (("val", val_metric), ("train", "loss")):
        plot_overlay(curves, split, metric, sweep_dir / "plots" / f"{split}_{metric}.png",
                     f"{experiment}: {split} {metric}", styles)
    # Gradient flow side by side: the first finished seed of each config that recorded it.
    flows = [(label, sweep_dir / rs[0]["run"] / "gradflow.csv") for label, rs in finished if rs]
    plot_gradflow([(label, read_gradflow(p)) for label, p in flows if p.is_file()], sweep_dir / "plots")


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
