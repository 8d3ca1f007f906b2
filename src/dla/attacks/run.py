"""`dla attack RUN_DIR | SWEEP_DIR`: robust accuracy of trained runs at several eps, with a table, a plot and a grid.

A run folder gets RUN_DIR/attacks/<name>/ (name = the method, plus the target, variant or least-likely mode):
results.json (one row per eps, from `evaluate_attack`), table.md, accuracy_vs_eps.png and grid.png (original,
adversarial at each eps, difference amplified to the full range, with labels). A sweep folder gets that for each
finished run, and SWEEP_DIR/attacks/<name>/summary.md: accuracy at each eps, mean ± std over the seeds of each
config (the sweep's groups), with results.json and a mean ± std plot. A run already attacked with the same
request on the same weights keeps its folder and is not attacked again (`dla.attacks.reuse`; `--rescore`).

Everything is checked before anything is attacked or written, so a bad request (an unknown class, an option
the method does not have, eps out of range) is one line and leaves no folder behind.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from dla.attacks.common import (
    VARIANTS,
    AttackError,
    attack_mode,
    check_alpha,
    check_eps,
    least_likely_target,
    logits_of,
)
from dla.attacks.evaluate import evaluate_attack
from dla.attacks.plots import fmt_eps, plot_accuracy_vs_eps, plot_attack_grid
from dla.attacks.registry import get_attack
from dla.attacks.reuse import fingerprint, saved_rows
from dla.data.provenance import measured_caption, models_caption
from dla.io import atomic_write, write_json
from dla.nn.amp import amp_caption, check_amp, with_amp
from dla.report.collect import finished_sweep_runs, group_name, is_sweep_dir, read_jsons
from dla.report.tables import HEADERS, fmt, fmt_mean_std, markdown_table, mean_std
from dla.runs import machine_here
from dla.tracking import progress
from dla.train.restore import TrainedRun, load_trained, parse_class

DEFAULT_EPS = "0,1/255,2/255,4/255,8/255"
Row = dict[str, Any]


def parse_number(text: str, option: str) -> float:
    """'0.1', '8/255', '1e-2' -> float; anything else is an AttackError naming the option."""
    try:
        value = float(Fraction(text.strip())) if "/" in text else float(text.strip())
    except (ValueError, ZeroDivisionError):
        raise AttackError(f"{option} takes numbers such as 0.1 or 8/255; got {text.strip()!r}") from None
    if not math.isfinite(value):
        raise AttackError(f"{option} must be finite; got {text.strip()!r}")
    return value


def parse_eps(text: str | Sequence[float]) -> list[float]:
    """'0,1/255,8/255' (or a list of numbers) -> [0.0, 0.0039..., 0.031...]: each in [0, 1], no repeats."""
    raw = text.split(",") if isinstance(text, str) else list(text)
    values = [parse_number(w, "--eps") if isinstance(w, str) else check_eps(w) for w in raw]
    if not values or (isinstance(text, str) and not text.strip()):
        raise AttackError("--eps needs at least one value, e.g. --eps 0,2/255,8/255")
    for v in values:
        if not 0 <= v <= 1:
            raise AttackError(f"--eps values are L_inf radii of [0, 1] images, between 0 and 1; got {fmt_eps(v)}")
    if len(set(values)) != len(values):
        raise AttackError(f"--eps lists a value twice: {', '.join(fmt_eps(v) for v in values)}")
    return values


@dataclass(frozen=True)
class AttackRequest:
    """A checked `dla attack` request; what depends on the run (the target class) is resolved per run."""

    method: str = "pgd"
    eps: tuple[float, ...] = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)
    options: dict[str, Any] = field(default_factory=dict)  # the attack's own options: steps, alpha, restarts, queries
    targeted: int | str | None = None  # class index or name
    variant: str = "standard"
    least_likely: bool = False
    n: int | None = None  # the first n test images; None = the whole test split
    batch_size: int = 256
    grid: int = 8
    seed: int = 0
    device: str = "cpu"
    amp: str = "off"  # "bf16": the model under bf16 autocast (dla.nn.amp); never the default

    @property
    def is_targeted(self) -> bool:
        return self.targeted is not None or self.least_likely

    def folder(self, target: int | None) -> str:
        """'pgd', 'pgd_targeted-3', 'fgsm_least-likely_ovr': one folder per kind of attack, eps all inside."""
        parts = [self.method]
        if target is not None:
            parts.append(f"targeted-{target}")
        if self.least_likely:
            parts.append("least-likely")
        if self.variant != "standard":
            parts.append(self.variant)
        if self.amp != "off":
            parts.append(self.amp)
        return "_".join(parts)


def make_request(method: str = "pgd", eps: str | Sequence[float] = DEFAULT_EPS, *, steps: int | None = None,
                 alpha: str | float | None = None, restarts: int | None = None, targeted: int | str | None = None,
                 variant: str = "standard", least_likely: bool = False, n: int | None = None, batch_size: int = 256,
                 grid: int = 8, seed: int = 0, device: str = "auto", amp: str = "off",
                 queries: int | None = None) -> AttackRequest:
    """Check everything that does not depend on the run, with the CLI's option names in the messages."""
    from dla.runtime import pick_device

    check_amp(amp)

    spec = get_attack(method)  # unknown method: one line listing the known ones
    eps_list = parse_eps(eps)
    given = {"steps": steps, "alpha": alpha, "restarts": restarts, "queries": queries}
    options: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            continue
        if name not in spec.options():
            useful = [f"--{o}" for o in given if o in spec.options()]
            raise AttackError(f"--{name} does not apply to {method}"
                              + (f" (its options: {', '.join(useful)})" if useful else " (it has no step options)"))
        options[name] = value
    if "alpha" in options:
        a = options["alpha"]
        options["alpha"] = check_alpha(parse_number(a, "--alpha") if isinstance(a, str) else a, "--alpha")
    for name in ("steps", "restarts", "queries"):
        v = options.get(name)
        low = 0 if name == "steps" else 1
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
            raise AttackError(f"--{name} must be an integer >= {low}; got {v!r}")
    if variant not in VARIANTS:
        raise AttackError(f"--variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
    if targeted is not None and least_likely:
        raise AttackError("--least-likely picks each image's target itself; pass either it or --targeted CLASS")
    if variant != "standard" and targeted is None and not least_likely:
        raise AttackError(f"--variant {variant} is a targeted loss: add --targeted CLASS or --least-likely")
    if (targeted is not None or least_likely) and not spec.targeted:
        raise AttackError(f"{method} has no targeted mode")
    if n is not None and (isinstance(n, bool) or n < 1):
        raise AttackError(f"--n must be a positive number of test images; got {n!r}")
    if isinstance(batch_size, bool) or batch_size < 1:
        raise AttackError(f"--batch-size must be a positive integer; got {batch_size!r}")
    if isinstance(grid, bool) or grid < 0:
        raise AttackError(f"--grid must be a number of images >= 0 (0 = no grid); got {grid!r}")
    if seed < 0:
        raise AttackError(f"--seed must be >= 0; got {seed}")
    return AttackRequest(method, tuple(eps_list), options, targeted, variant, least_likely, n, batch_size, grid,
                         seed, str(pick_device(device)), amp)


@dataclass
class Outcome:
    """One run attacked: the rows of `evaluate_attack` and the grid's images, before anything is written."""

    run: TrainedRun
    request: AttackRequest
    target: int | None
    rows: list[Row]
    grid: dict[str, Any] | None

    @property
    def folder(self) -> Path:
        return self.run.path / "attacks" / self.request.folder(self.target)

    def describe(self) -> str:
        r = self.request
        opts = ", ".join(f"{k}={_fmt_option(k, v)}" for k, v in effective_options(r.method, r.options).items())
        what = f"{r.method}" + (f" ({opts})" if opts else "")
        if self.target is not None:
            name = self.run.classes[self.target]
            what += f", targeted at class {self.target}" + (f" ({name})" if name != str(self.target) else "")
        if r.least_likely:
            what += ", targeted at each image's least-likely class"
        if r.variant != "standard":
            what += f", {r.variant} loss"
        if r.amp != "off":
            what += f", {r.amp} autocast (not exact)"
        return what


def effective_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The step options the attack runs with: the ones given, else its defaults (pgd: steps=10, restarts=1;
    square: queries=5000, restarts=1)."""
    params = inspect.signature(get_attack(method).fn).parameters
    return {k: options.get(k, params[k].default) for k in ("steps", "alpha", "restarts", "queries") if k in params}


def _fmt_option(name: str, value: Any) -> str:
    if name == "alpha":
        return "2.5*eps/steps" if value is None else fmt_eps(float(value))
    return str(value)


def _attack_kw(request: AttackRequest, target: int | None) -> dict[str, Any]:
    kw = dict(request.options)
    if target is not None:
        kw.update(targeted=True, target=target)
    if request.least_likely:
        kw["least_likely"] = True
    if request.variant != "standard":
        kw["variant"] = request.variant
    return kw


def attack_trained(run: TrainedRun, request: AttackRequest) -> Outcome:
    """`evaluate_attack` on the run's first n test images (all by default), then the grid's examples; no writes."""
    target = _target(run, request)
    n = len(run.test_y) if request.n is None else min(request.n, len(run.test_y))
    x, y = run.test_x[:n], run.test_y[:n]  # uint8 (n, C, H, W), (n,)
    model = with_amp(run.model.to(request.device), request.amp)
    kw = _attack_kw(request, target)
    torch.manual_seed(request.seed)  # PGD's random starts come from the global RNG
    # Batches through a progress bar (terminals only): each batch is attacked at every eps, so with many eps and
    # PGD steps this is the long part; the ETA covers it all.
    bs = request.batch_size
    batches = progress(((x[i: i + bs], y[i: i + bs]) for i in range(0, n, bs)), total=-(-n // bs),
                       desc=f"{request.method}, {len(request.eps)} eps")
    rows = evaluate_attack(model, batches, request.method, list(request.eps), batch_size=bs, **kw)
    return Outcome(run, request, target, rows, _grid_examples(model, x, y, request, kw))


def _grid_examples(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, request: AttackRequest,
                   kw: dict[str, Any]) -> dict[str, Any] | None:
    """The first `grid` images attacked at every eps > 0 (a separate call with the same seed: the table is the
    number of record, the grid is for looking)."""
    g = min(request.grid, len(y))
    nonzero = [e for e in request.eps if e > 0]
    if g == 0:
        return None
    device = request.device
    xg, yg = x[:g].to(device).float().div(255), y[:g].to(device)  # (g, C, H, W) in [0, 1]
    spec = get_attack(request.method)
    gkw = dict(kw)
    torch.manual_seed(request.seed)
    with attack_mode(model):
        pred = logits_of(model, xg).argmax(1)  # (g,)
        target = None
        if gkw.pop("least_likely", False):  # resolved here so that the grid knows each image's target
            target = least_likely_target(model, xg)
            gkw.update(targeted=True, target=target)
        elif "target" in gkw:
            target = torch.full_like(yg, gkw["target"])
        adv = []
        for eps in nonzero:
            xa = spec(model, xg, yg, eps, **gkw)
            adv.append((eps, xa.cpu(), logits_of(model, xa).argmax(1).cpu()))
    return {"x": xg.cpu(), "y": yg.cpu(), "pred": pred.cpu(), "adv": adv,
            "target": target.cpu() if target is not None else None}


def table(rows: Sequence[Row]) -> str:
    """One row per eps: loss, accuracy, macro precision and recall on the attacked images (and success rate)."""
    targeted = any("success_rate" in r for r in rows)
    metrics = ["loss", "accuracy", "precision", "recall"]
    header = ["eps", *(HEADERS[m] for m in metrics), *(["Target success"] if targeted else [])]
    body = [[fmt_eps(float(r["eps"])), *(fmt(m, float(r[m])) for m in metrics),
             *([fmt("accuracy", float(r["success_rate"]))] if targeted else [])] for r in rows]
    return markdown_table(header, body)


def run_label(run: TrainedRun) -> str:
    return f"{run.path.parent.name}/{run.path.name}"


def _models_caption(runs: Iterable[TrainedRun]) -> str:
    """What the attacked models were trained on (data, budget), from their results.json."""
    return models_caption(read_jsons(run.path / "results.json" for run in runs))


def write_outcome(out: Outcome) -> Path:
    """results.json, table.md, accuracy_vs_eps.png and grid.png under the run's attacks/<name>/."""
    r, folder, label = out.request, out.folder, run_label(out.run)
    folder.mkdir(parents=True, exist_ok=True)
    results = {
        "run": str(out.run.path),
        "experiment": out.run.cfg.experiment,
        "method": r.method,
        "options": effective_options(r.method, r.options),
        "target": out.target,
        "target_name": out.run.classes[out.target] if out.target is not None else None,
        "least_likely": r.least_likely,
        "variant": r.variant,
        "n": out.rows[0]["n"],
        "seed": r.seed,
        "device": r.device,
        "amp": r.amp,
        "rows": out.rows,
        "fingerprint": fingerprint(r, out.run.path),
        "machine": machine_here(r.device),
    }
    write_json(folder / "results.json", results)
    text = (f"# {label}: {out.describe()}\n\nFirst {out.rows[0]['n']} test images, best checkpoint, seed "
            f"{r.seed}; eps in pixel units of [0, 1] images.{_models_caption([out.run])}{amp_caption(r.amp)}"
            f"{measured_caption([results])}\n\n" + table(out.rows))
    with atomic_write(folder / "table.md", "w") as f:
        f.write(text)
    eps = [float(row["eps"]) for row in out.rows]
    series = [("accuracy" if out.target is not None or r.least_likely else "",
               eps, [float(row["accuracy"]) for row in out.rows], [0.0] * len(eps))]
    if r.is_targeted:
        series.append(("target success", eps, [float(row["success_rate"]) for row in out.rows], [0.0] * len(eps)))
    plot_accuracy_vs_eps(series, folder / "accuracy_vs_eps.png", f"{label}: {out.describe()}",
                         ylabel="accuracy" if not r.is_targeted else "rate")
    if out.grid is not None and out.grid["adv"]:
        g = out.grid
        plot_attack_grid(g["x"], g["adv"], g["y"], g["pred"], out.run.classes, folder / "grid.png",
                         f"{label}: {out.describe()}", target=g["target"])
    else:  # --grid 0 or only eps 0: no grid, and none left over from an earlier request to this folder
        (folder / "grid.png").unlink(missing_ok=True)
    return folder


# ---------------------------------------------------------------------------------------------------------------
# Sweeps: every finished run, then mean ± std over the seeds of each config

LAB_METRICS = ("accuracy", "loss", "precision", "recall")


def robustness_table(groups: Sequence[tuple[str, Sequence[Sequence[Row]]]], metric: str = "accuracy") -> str:
    """One row per config: `metric` at each eps, mean ± std (sample std) over its runs; groups hold each run's rows.

    Every run must have been attacked at the same eps (a sweep's runs are: one request attacks them all).
    """
    eps = [float(r["eps"]) for r in groups[0][1][0]]
    body = []
    for label, runs in groups:
        cells = [fmt_mean_std(metric, [float(rows[i][metric]) for rows in runs]) for i in range(len(eps))]
        body.append([label, *cells, str(len(runs))])
    header = ["Config", *(f"eps {fmt_eps(e)}" + (" (clean)" if e == 0 else "") for e in eps), "n"]
    return markdown_table(header, body)


def metrics_by_eps(runs: Sequence[Sequence[Row]], metrics: Sequence[str] = LAB_METRICS) -> str:
    """One config's runs as the lab's attack table: a row per eps, a column per metric, mean ± std over runs."""
    body = [[fmt_eps(float(row["eps"])), *(fmt_mean_std(m, [float(rows[i][m]) for rows in runs]) for m in metrics)]
            for i, row in enumerate(runs[0])]
    return markdown_table(["eps", *(HEADERS.get(m, m) for m in metrics)], body)


def _write_sweep(sweep_dir: Path, outcomes: list[Outcome], unfinished: list[Path]) -> tuple[Path, str]:
    request = outcomes[0].request
    folder = sweep_dir / "attacks" / request.folder(outcomes[0].target)
    groups: dict[str, list[list[Row]]] = {}
    for out in outcomes:
        groups.setdefault(group_name(out.run.path.name), []).append(out.rows)
    metric = "success_rate" if request.is_targeted else "accuracy"
    what = "target success rate" if request.is_targeted else "accuracy"
    text = (f"# {sweep_dir.parent.name}/{sweep_dir.name}: {outcomes[0].describe()}\n\n"
            f"Test {what} under attack at each eps (eps 0 = clean), first {outcomes[0].rows[0]['n']} test images, "
            f"best checkpoint of each run, attack seed {request.seed}; mean ± std (sample std) over n runs."
            f"{_models_caption(out.run for out in outcomes)}{amp_caption(request.amp)}"
            f"{measured_caption(read_jsons(o.folder / 'results.json' for o in outcomes))}\n\n"
            + robustness_table(list(groups.items()), metric))
    for label, runs in groups.items():  # the lab's table: loss and macro precision / recall beside accuracy
        text += f"\n{label}, every metric ({len(runs)} runs):\n\n" + metrics_by_eps(
            runs, [*LAB_METRICS, "success_rate"] if request.is_targeted else LAB_METRICS)
    if unfinished:
        text += f"\nNot attacked (unfinished runs): {', '.join(p.name for p in unfinished)}\n"
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "results.json", {"sweep": str(sweep_dir), "method": request.method,
                                         "options": request.options, "seed": request.seed, "amp": request.amp,
                                         "runs": {out.run.path.name: out.rows for out in outcomes}})
    with atomic_write(folder / "summary.md", "w") as f:
        f.write(text)
    series = []
    for label, runs in groups.items():
        stats = [mean_std([float(rows[i][metric]) for rows in runs]) for i in range(len(request.eps))]
        series.append((label, [float(r["eps"]) for r in runs[0]], [m for m, _ in stats], [s for _, s in stats]))
    plot_accuracy_vs_eps(series, folder / "accuracy_vs_eps.png",
                         f"{sweep_dir.parent.name}/{sweep_dir.name}: {outcomes[0].describe()} (mean ± std)",
                         ylabel=what)
    return folder, text


def _target(run: TrainedRun, request: AttackRequest) -> int | None:
    return parse_class(request.targeted, run.classes, "--targeted", AttackError) \
        if request.targeted is not None else None


def attack_or_reuse(run: TrainedRun, request: AttackRequest, rescore: bool = False) -> Outcome:
    """The run's saved outcome for this request and weights, else the run attacked and its folder written."""
    target = _target(run, request)
    folder = run.path / "attacks" / request.folder(target)
    rows = None if rescore else saved_rows(folder, request, run.path)
    if rows is not None:
        print(f"{run_label(run)}: reusing {folder} (same request, same checkpoint; --rescore attacks it again)",
              file=sys.stderr)
        return Outcome(run, request, target, rows, None)
    out = attack_trained(run, request)
    write_outcome(out)
    return out


def attack_path(path: str | Path, request: AttackRequest, data_root: Path | None = None,
                rescore: bool = False) -> tuple[Path, str]:
    """Attack a run folder, or every finished run of a sweep folder; returns (output folder, Markdown text).
    In a sweep, a run attacked before with this request on its current weights is reused unless `rescore`."""
    from dla.data import resolve_data_root

    path = Path(path)
    root = data_root or resolve_data_root()
    if is_sweep_dir(path):
        finished, unfinished = finished_sweep_runs(path)
        runs = [load_trained(p, root) for p in finished]  # every run checked before any is attacked
        if len({_target(run, request) for run in runs}) > 1:
            raise AttackError(f"--targeted {request.targeted!r} names different classes in this sweep's runs")
        outcomes = [attack_or_reuse(run, request, rescore) for run in runs]
        return _write_sweep(path, outcomes, unfinished)
    out = attack_trained(load_trained(path, root), request)
    folder = write_outcome(out)
    return folder, (folder / "table.md").read_text()
