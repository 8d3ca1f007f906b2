"""What data a result was measured on, in words that travel with it (results.json, summaries, sweep tables).

A number measured on a subset, on the JPEG copy of CIFAR-10 or on a stand-in must say so wherever it is shown,
so it cannot pass for the benchmark's own figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dla.config import ExperimentConfig
from dla.data.splits import Splits

ORIGINAL = "original files"


def data_provenance(cfg: ExperimentConfig, splits: Splits) -> dict[str, Any]:
    """results.json's "data" section: the dataset, its source and the split sizes actually used."""
    return {
        "name": cfg.data.name,
        "source": splits.spec.source or ORIGINAL,
        "train": len(splits.train),
        "val": len(splits.val),
        "test": len(splits.test),
        "limit_train": cfg.data.limit_train,
        "limit_test": cfg.data.limit_test,
    }


def data_caption(results: Sequence[Mapping[str, Any]]) -> str:
    """One phrase naming the data of these runs, e.g. "cifar10_jpeg (CIFAR-10, JPEG copy ...; 45,000/5,000/10,000
    train/val/test)"; runs that disagree are each named."""
    phrases = []
    for r in results:
        data = r.get("data")
        if not isinstance(data, Mapping):  # results written before provenance existed
            phrase = str(r.get("dataset", "unknown data"))
        else:
            sizes = "/".join(f"{int(data.get(k, 0)):,}" for k in ("train", "val", "test"))
            source = data.get("source", ORIGINAL)
            what = f"{source}; " if source != ORIGINAL else ""
            limited = ", subset" if data.get("limit_train") or data.get("limit_test") else ""
            unit = f"{data['unit']} " if data.get("unit") else ""  # e.g. "char tokens"; images unnamed
            phrase = f"{data.get('name')} ({what}{sizes} {unit}train/val/test{limited})"
        if phrase not in phrases:
            phrases.append(phrase)
    return "; ".join(phrases) if phrases else "unknown data"


def budget_caption(results: Sequence[Mapping[str, Any]]) -> str:
    """The training budget these runs had: "10 epochs configured, 8–10 run (early stopping)"; "" if unknown."""
    ran = sorted({int(r["epochs_run"]) for r in results if isinstance(r.get("epochs_run"), int | float)})
    conf = sorted({int(r["epochs_configured"]) for r in results if isinstance(r.get("epochs_configured"), int | float)})
    if not ran:
        return ""
    span = f"{ran[0]}" if len(ran) == 1 else f"{ran[0]}–{ran[-1]}"
    if not conf:
        return f"{span} epochs (or steps) run"
    unit = "steps" if any(r.get("budget_unit") == "steps" for r in results) else "epochs"  # a language model's
    stopped = " (early stopping)" if ran[0] < conf[-1] else ""
    return f"{'/'.join(map(str, conf))} {unit} configured, {span} run{stopped}"


def machine_caption(results: Sequence[Mapping[str, Any]]) -> str:
    """Where these runs were measured: "Intel(R) Xeon(R) ... , 2 threads, cpu, torch 2.13.0+cpu"; "" if unknown."""
    phrases = []
    for r in results:
        m = r.get("machine")
        if not isinstance(m, Mapping) or not m:
            continue
        where = m.get("gpu") or m.get("device", "?")
        world = f" x {m['world_size']} processes" if int(m.get("world_size") or 1) > 1 else ""
        phrase = (f"{m.get('cpu_model', '?')}, {m.get('torch_threads', '?')} threads, {where}{world}, "
                  f"torch {m.get('torch', '?')}")
        if phrase not in phrases:
            phrases.append(phrase)
    return "; ".join(phrases)


def measured_caption(results: Sequence[Mapping[str, Any]]) -> str:
    """" Measured on <machine>." for an evaluation's table, from its results.json files' "machine"; "" when none
    says (an evaluation saved by an older dla)."""
    machine = machine_caption(results)
    return f" Measured on: {machine}." if machine else ""


def models_caption(results: Sequence[Mapping[str, Any]]) -> str:
    """" Models trained on <data>, <budget>." for a table measured on trained runs (an attack's, an OOD score's),
    so it names the training data as a sweep summary does; "" when no run's results.json was read."""
    if not results:
        return ""
    budget = budget_caption(results)
    return f" Models trained on {data_caption(results)}" + (f", {budget}" if budget else "") + "."
