"""`dla attack RUN_DIR | SWEEP_DIR --suite autoattack`: the suite's table, with gradient-masking warnings under it.

A run folder gets RUN_DIR/attacks/<suite>/results.json and table.md (clean, each attack's robust accuracy and the
worst case per eps); a sweep folder gets that for each finished run and SWEEP_DIR/attacks/<suite>/summary.md with
mean ± std (sample std) over the seeds of each config. Everything is computed before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dla.attacks.common import AttackError, check_count
from dla.attacks.masking import PROBE, masking_warnings
from dla.attacks.plots import fmt_eps
from dla.attacks.registry import get_attack
from dla.attacks.run import parse_eps, run_label
from dla.attacks.suite import caption, evaluate_suite, suite_attacks
from dla.io import atomic_write, write_json
from dla.report.collect import finished_sweep_runs, group_name, is_sweep_dir
from dla.report.tables import fmt, fmt_mean_std, markdown_table
from dla.train.restore import TrainedRun, load_trained

Row = dict[str, Any]


@dataclass(frozen=True)
class SuiteRequest:
    suite: str = "autoattack"
    eps: tuple[float, ...] = (8 / 255,)
    steps: int | None = None  # every attack's steps; None = each attack's default (100 for the APGDs and FAB-T)
    queries: int | None = None  # Square's query budget; None = its default (5000)
    n: int | None = None
    batch_size: int = 256
    seed: int = 0
    device: str = "cpu"
    checks: bool = True  # the gradient-masking probes (extra PGD runs, and Square, on the first PROBE images)

    @property
    def attacks(self) -> tuple[str, ...]:
        return suite_attacks(self.suite)

    def options(self) -> dict[str, dict[str, Any]]:
        """Each attack's options: --steps for those that take steps, --queries for Square."""
        given = {"steps": self.steps, "queries": self.queries}
        return {a: {k: v for k, v in given.items() if v is not None and k in get_attack(a).options()}
                for a in self.attacks}

    @property
    def square_queries(self) -> int | None:
        """Square's budget when the suite runs Square (then the black-box masking check runs too), else None."""
        return (self.queries or 5000) if "square" in self.attacks else None

    def describe(self) -> str:
        budget = f", Square queries={self.square_queries}" if self.square_queries is not None else ""
        return f"{self.suite} ({' + '.join(a.upper() for a in self.attacks)}, steps=" \
               f"{self.steps if self.steps is not None else 100}{budget})"


def make_suite_request(suite: str, eps: str, *, steps: int | None = None, queries: int | None = None,
                       n: int | None = None, batch_size: int = 256, seed: int = 0, device: str = "auto",
                       checks: bool = True) -> SuiteRequest:
    """Check everything that does not depend on the run, with the CLI's option names in the messages."""
    from dla.runtime import pick_device

    suite_attacks(suite)
    if steps is not None:
        check_count(steps, "--steps", 1)
    if queries is not None:
        check_count(queries, "--queries", 1)
        if "square" not in suite_attacks(suite):
            raise AttackError(f"--queries is Square's budget, and suite {suite!r} does not run Square")
    if n is not None and (isinstance(n, bool) or n < 1):
        raise AttackError(f"--n must be a positive number of test images; got {n!r}")
    if isinstance(batch_size, bool) or batch_size < 1:
        raise AttackError(f"--batch-size must be a positive integer; got {batch_size!r}")
    if seed < 0:
        raise AttackError(f"--seed must be >= 0; got {seed}")
    values = sorted(set(parse_eps(eps)))
    return SuiteRequest(suite, tuple(values), steps, queries, n, batch_size, seed, str(pick_device(device)), checks)


@dataclass
class SuiteOutcome:
    run: TrainedRun
    request: SuiteRequest
    rows: list[Row]
    warnings: list[str]

    @property
    def folder(self) -> Path:
        return self.run.path / "attacks" / self.request.suite


def attack_run_with_suite(run: TrainedRun, request: SuiteRequest) -> SuiteOutcome:
    n = len(run.test_y) if request.n is None else min(request.n, len(run.test_y))
    x, y = run.test_x[:n], run.test_y[:n]  # uint8 (n, C, H, W), (n,)
    model = run.model.to(request.device)
    rows = evaluate_suite(model, (x, y), request.attacks, request.eps, batch_size=request.batch_size,
                          seed=request.seed, options=request.options())
    warnings: list[str] = []
    if request.checks:
        xp = x[:PROBE].to(request.device).float().div(255)
        warnings = masking_warnings(model, xp, y[:PROBE].to(request.device), rows, request.seed,
                                    request.square_queries)
    return SuiteOutcome(run, request, rows, warnings)


def _cells(row: Row, attacks: tuple[str, ...]) -> list[str]:
    return [fmt("accuracy", row["clean"]), *(fmt("accuracy", row["attacks"][a]) for a in attacks),
            fmt("accuracy", row["worst"])]


def _header(attacks: tuple[str, ...]) -> list[str]:
    return ["Clean", *(a.upper() for a in attacks), "Worst case"]


def suite_table(out: SuiteOutcome) -> str:
    r = out.request
    body = [[fmt_eps(row["eps"]), *_cells(row, r.attacks)] for row in out.rows]
    text = (f"# {run_label(out.run)}: {r.describe()}\n\nRobust accuracy (L_inf, eps in pixel units of [0, 1] "
            f"images), first {out.rows[0]['n']} test images, best checkpoint, seed {r.seed}; worst case = robust "
            f"to every attack. {caption(r.suite)}.\n\n" + markdown_table(["eps", *_header(r.attacks)], body))
    return text + "".join(f"\n{w}\n" for w in out.warnings)


def write_suite_outcome(out: SuiteOutcome) -> Path:
    r, folder = out.request, out.folder
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "results.json", {"run": str(out.run.path), "suite": r.suite, "attacks": list(r.attacks),
                                         "caption": caption(r.suite), "options": r.options(), "seed": r.seed,
                                         "device": r.device, "rows": out.rows, "warnings": out.warnings})
    with atomic_write(folder / "table.md", "w") as f:
        f.write(suite_table(out))
    return folder


def sweep_suite_table(outcomes: list[SuiteOutcome]) -> str:
    """One row per (config, eps): each column's mean ± std over the config's runs; then every run's warnings."""
    r = outcomes[0].request
    groups: dict[str, list[SuiteOutcome]] = {}
    for out in outcomes:
        groups.setdefault(group_name(out.run.path.name), []).append(out)
    body = []
    for label, outs in groups.items():
        for i, eps in enumerate(r.eps):
            rows = [o.rows[i] for o in outs]
            cols = [[row["clean"] for row in rows], *([row["attacks"][a] for row in rows] for a in r.attacks),
                    [row["worst"] for row in rows]]
            body.append([label, fmt_eps(eps), *(fmt_mean_std("accuracy", c) for c in cols), str(len(outs))])
    text = markdown_table(["Config", "eps", *_header(r.attacks), "n"], body)
    for out in outcomes:
        text += "".join(f"\n{out.run.path.name}: {w}\n" for w in out.warnings)
    return text


def suite_path(path: str | Path, request: SuiteRequest, data_root: Path | None = None) -> tuple[Path, str]:
    """The suite on a run folder, or on every finished run of a sweep folder; (output folder, Markdown text)."""
    from dla.data import resolve_data_root

    path = Path(path)
    root = data_root or resolve_data_root()
    if not is_sweep_dir(path):
        out = attack_run_with_suite(load_trained(path, root), request)
        folder = write_suite_outcome(out)
        return folder, suite_table(out)
    finished, unfinished = finished_sweep_runs(path)
    runs = [load_trained(p, root) for p in finished]  # every run checked before any is attacked
    outcomes = [attack_run_with_suite(run, request) for run in runs]
    for out in outcomes:
        write_suite_outcome(out)
    r = request
    text = (f"# {path.parent.name}/{path.name}: {r.describe()}\n\nRobust accuracy (L_inf, eps in pixel units), first "
            f"{outcomes[0].rows[0]['n']} test images, best checkpoint of each run, seed {r.seed}; mean ± std (sample "
            f"std) over n runs; worst case = robust to every attack. {caption(r.suite)}.\n\n"
            + sweep_suite_table(outcomes))
    if unfinished:
        text += f"\nNot attacked (unfinished runs): {', '.join(p.name for p in unfinished)}\n"
    folder = path / "attacks" / r.suite
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "results.json", {"sweep": str(path), "suite": r.suite, "caption": caption(r.suite),
                                         "options": r.options(), "seed": r.seed,
                                         "runs": {o.run.path.name: {"rows": o.rows, "warnings": o.warnings}
                                                  for o in outcomes}})
    with atomic_write(folder / "summary.md", "w") as f:
        f.write(text)
    return folder, text
