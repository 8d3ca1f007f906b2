"""Which runs of a `dla attack SWEEP_DIR` are already attacked: a run's RUN/attacks/<name>/results.json is reused
when it answers the same request (every field of `AttackRequest`) on the same weights (the sha256 of
checkpoints/best.pt).

FGSM at 11 eps on 10,000 CIFAR-10 test images takes minutes per run on a CPU, so a sweep attacked again after one
more seed finished attacks only that seed; `--rescore` attacks every run again. A results.json written before the
fingerprint existed, for another request, or for weights that have since changed is never reused.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

MAX_RESULTS_BYTES = 16 << 20  # a results.json this large was not written by `dla attack`: never parsed


def fingerprint(request: Any, run_dir: Path) -> dict[str, Any]:
    """The request (`dla.attacks.run.AttackRequest`) as JSON values and the best checkpoint's sha256."""
    from dla.data.files import file_digest

    as_json = json.loads(json.dumps(dataclasses.asdict(request)))  # tuples -> lists, as results.json holds them
    return {"request": as_json, "checkpoint_sha256": file_digest(run_dir / "checkpoints" / "best.pt", "sha256")}


def saved_rows(folder: Path, request: Any, run_dir: Path) -> list[dict[str, Any]] | None:
    """The rows of folder/results.json when it holds this request's results for the run's current weights."""
    from dla.runs import read_fingerprinted

    saved = read_fingerprinted(folder / "results.json", fingerprint(request, run_dir), MAX_RESULTS_BYTES)
    rows = saved.get("rows") if saved else None
    return rows if isinstance(rows, list) and rows else None
