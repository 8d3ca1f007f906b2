"""`dla ood SWEEP_DIR`: every finished run of a sweep scored as `dla ood RUN_DIR` scores one, then one table with
each row's metrics as mean ± sample std over the runs of each config (the sweep's points without the seed).

Each run gets its own RUN/ood/ (table, plots, results.json). SWEEP_DIR/ood/ gets summary.md (the table) and
results.json (every run's per-set and per-group numbers). Every run is loaded and checked before any is scored,
so a sweep holding a broken run fails with one line before anything is written. A run already scored with the
same request on the same weights keeps its RUN/ood/ and is not scored again (`dla.ood.reuse`; `--rescore`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dla.nn.amp import amp_caption
from dla.ood.tables import Row, group_summary_table, sweep_table


def ood_sweep(sweep_dir: Path, req: Any, root: Path, log: Callable[[str], Any] = print,
              rescore: bool = False) -> tuple[Path, str]:
    """Score every finished run of `sweep_dir` with `req` (`dla.ood.run.OODRequest`): (SWEEP_DIR/ood, summary).
    A run already scored with the same request on the same weights is reused (`dla.ood.reuse`) unless `rescore`."""
    from dla.data.provenance import measured_caption, models_caption
    from dla.io import atomic_write, write_json
    from dla.ood.reuse import saved_results, saved_rows
    from dla.ood.run import detector_caption, prepare, score_prepared
    from dla.ood.tables import table_rows
    from dla.report.collect import finished_sweep_runs, group_name, read_jsons
    from dla.train.restore import load_trained

    finished, unfinished = finished_sweep_runs(sweep_dir)
    saved = {p: None if rescore else saved_results(p, req) for p in finished}
    # Every run to score loaded, checked and its OOD sets loaded before any is scored: a bad request writes nothing.
    prepared = {p: prepare(load_trained(p, root), req, root) for p in finished if saved[p] is None}
    configs: dict[str, list[list[Row]]] = {}
    per_run: dict[str, dict[str, Any]] = {}
    scored: list[dict[str, Any]] = []  # each run's ood/results.json, saved or fresh: where it was measured
    for i, path in enumerate(finished):
        if saved[path] is not None:
            log(f"run {i + 1} of {len(finished)}: {path.name}: reusing its ood/results.json (same request, same "
                "checkpoint; --rescore scores it again)")
            results, rows = saved[path], table_rows(saved_rows(saved[path]))
        else:
            log(f"run {i + 1} of {len(finished)}: {path.name}")
            report = score_prepared(prepared[path], log)
            results, rows = report.results, report.rows
        configs.setdefault(group_name(path.name), []).append(rows)
        scored.append(results)
        per_run[path.name] = {k: results[k] for k in ("id", "ood", "groups")}
        per_run[path.name]["detectors"] = results["settings"].get("detectors", {})
    first = next(iter(per_run.values()))["id"]
    caption = (f"ID: {first['dataset']} test, the first {first['n']} images of each run's test split and of each "
               "OOD set, best checkpoint of each run. Each cell: mean ± sample std over the config's n runs; a "
               "group's mean row is each run's mean over the group's sets, then mean ± std over the runs."
               + (" odin tuned: each run's own validation-chosen (T, eps)." if req.odin_grid else "")
               + detector_caption(next(iter(per_run.values()))["detectors"]) + amp_caption(req.amp)
               + models_caption(read_jsons(p / "results.json" for p in finished)) + measured_caption(scored))
    name = f"{sweep_dir.parent.name}/{sweep_dir.name}"
    text = f"# {name}: OOD detection\n\n" + sweep_table(list(configs.items()), caption)
    for label, runs in configs.items():  # OpenOOD's layout: a method per row, its group means side by side
        text += (f"\n## {label}: group means over {len(runs)} run{'s' if len(runs) > 1 else ''} (mean ± std; best "
                 "per column in bold)\n\n" + group_summary_table(runs))
    if unfinished:
        text += f"\nNot scored (unfinished runs): {', '.join(p.name for p in unfinished)}\n"
    folder = sweep_dir / "ood"
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "results.json", {"sweep": str(sweep_dir), "settings": {"ood": req.ood,
                                         "methods": list(req.methods), "limit": req.limit, "seed": req.seed,
                                         "odin_grid": req.odin_grid, "fit_limit": req.fit_limit,
                                         "detectors": next(iter(per_run.values()))["detectors"], "amp": req.amp},
                                         "runs": per_run})
    with atomic_write(folder / "summary.md", "w") as f:
        f.write(text)
    return folder, text
