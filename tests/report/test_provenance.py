"""Where and on what budget a number was measured: results.json's "machine" section (from the run's env.json,
for every task) and the budget and machine phrases of a sweep's summary caption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dla.data.provenance import budget_caption, machine_caption
from dla.runs import RESULTS_SCHEMA, RunDir, cpu_model, write_results

from ..conftest import QUICK, needs_mnist, train_run


@needs_mnist
def test_results_json_names_the_machine_and_commit_of_its_run(tmp_path: Path) -> None:
    run = train_run(tmp_path, "mnist_mlp", [*QUICK, "tracking.tensorboard=false"])
    results, env = json.loads(run.results.read_text()), json.loads(run.env.read_text())
    m = results["machine"]
    assert m["cpu_model"] == cpu_model() == env["cpu_model"] and m["cpu_model"]
    assert (m["torch"], m["torch_threads"], m["device"]) == (torch.__version__, torch.get_num_threads(), "cpu")
    assert m["git_commit"] == env["git_commit"] and m["world_size"] == 1
    assert results["epochs_configured"] == results["epochs_run"]  # the budget, next to it
    assert list(results)[:len(RESULTS_SCHEMA)] == list(RESULTS_SCHEMA)  # the layout every task shares
    assert results["train"]["accuracy"] > 0 and "split" not in results["train"]


def test_a_results_record_built_by_hand_is_refused(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    with pytest.raises(ValueError, match="lacks data, epochs_configured, train; build it with results_record"):
        write_results(run, {k: 0 for k in RESULTS_SCHEMA if k not in ("data", "epochs_configured", "train")})
    assert not run.results.exists()


def test_the_budget_phrase_says_configured_and_run_epochs_and_early_stops() -> None:
    assert budget_caption([{"epochs_run": 10, "epochs_configured": 10}] * 3) == "10 epochs configured, 10 run"
    assert budget_caption([{"epochs_run": 7, "epochs_configured": 10}, {"epochs_run": 10, "epochs_configured": 10}]
                          ) == "10 epochs configured, 7–10 run (early stopping)"
    assert budget_caption([{"epochs_run": 200}]) == "200 epochs (or steps) run"
    assert budget_caption([{}]) == ""
    lm = {"epochs_run": 1500, "epochs_configured": 2000, "budget_unit": "steps"}
    assert budget_caption([lm]) == "2000 steps configured, 1500 run (early stopping)"


def test_the_machine_phrase_names_each_distinct_machine_once() -> None:
    a = {"machine": {"cpu_model": "Xeon", "torch_threads": 2, "device": "cpu", "torch": "2.13.0+cpu"}}
    b = {"machine": {"cpu_model": "Xeon", "torch_threads": 16, "device": "cuda:0", "gpu": "H200", "world_size": 2,
                     "torch": "2.11.0"}}
    assert machine_caption([a, a]) == "Xeon, 2 threads, cpu, torch 2.13.0+cpu"
    assert machine_caption([a, b, {}]) == ("Xeon, 2 threads, cpu, torch 2.13.0+cpu; Xeon, 16 threads, H200 x 2 "
                                           "processes, torch 2.11.0")
