"""Which runs of a `dla ood SWEEP_DIR` are already scored: a run's RUN/ood/results.json is reused when it answers
the same request (every option of `OODRequest`) on the same weights (the sha256 of checkpoints/best.pt).

Scoring a CIFAR-10 run with the ODIN grid takes minutes per run, so an interrupted sweep evaluation (or one
rerun after a new seed finished) scores only the runs it has not scored yet; `--rescore` scores every run again.
A results.json written before the fingerprint existed, for another request, or for weights that have since
changed (a resumed or retrained run) is never reused. The rows of the table are saved beside the per-set
metrics, so a reused run's rows are the rows it was scored with, not a reconstruction.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from dla.ood.tables import Row

MAX_RESULTS_BYTES = 64 << 20  # a results.json this large was not written by `dla ood`: never parsed


def fingerprint(req: Any, run_dir: Path) -> dict[str, Any]:
    """The request (`dla.ood.run.OODRequest`) as JSON values and the best checkpoint's sha256."""
    from dla.ood.features import checkpoint_key

    request = json.loads(json.dumps(dataclasses.asdict(req)))  # tuples -> lists, as results.json holds them
    if request.get("amp") == "off":  # the default, as before the option existed: earlier results stay reusable
        del request["amp"]
    return {"request": request, "checkpoint_sha256": checkpoint_key(run_dir / "checkpoints" / "best.pt")}


def rows_json(rows: list[Row]) -> list[dict[str, Any]]:
    """results.json["rows"]: the per-set rows (group means are derived from them again)."""
    return [{"group": r.group, "name": r.name, "method": r.method, "label": r.label, "metrics": r.metrics}
            for r in rows if not r.members]


def saved_results(run_dir: Path, req: Any) -> dict[str, Any] | None:
    """RUN/ood/results.json when it holds this request's results for the run's current weights, else None."""
    from dla.runs import read_fingerprinted

    saved = read_fingerprinted(run_dir / "ood" / "results.json", fingerprint(req, run_dir), MAX_RESULTS_BYTES)
    return saved if saved and isinstance(saved.get("rows"), list) else None


def saved_rows(saved: dict[str, Any]) -> list[Row]:
    """The per-set rows of a reused results.json (`table_rows` adds the group means as when it was scored)."""
    return [Row(r["group"], r["name"], r["method"], r["label"], dict(r["metrics"])) for r in saved["rows"]]
