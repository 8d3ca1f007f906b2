"""`dla run` of each textcls method end to end on a small subset: run folder, results, checkpoints, resume, sweep."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from dla.config import load_config
from dla.errors import DlaError
from dla.runs import RESULTS_SCHEMA
from dla.tasks import run_experiment
from dla.train.checkpoint import load_checkpoint

from ..conftest import DATA_ROOT, run_cli
from .conftest import needs_minilm, needs_rt

pytestmark = needs_rt
pytest.importorskip("peft")

SMALL = ["data.limit_train=240", "data.val_size=80", "data.limit_test=80", "data.batch_size=32",
         "data.eval_batch_size=64", "train.epochs=2", "train.early_stopping.patience=0", "textcls.max_length=32",
         "tracking.progress=off", "tracking.tensorboard=false"]
KEYS = {"experiment", "run", "model", "dataset", "seed", "parameters", "best_epoch", "epochs_run", "train_seconds",
        "device", "val", "test", "method", "trainable_parameters", "train"}


def _cli_run(capsys, tmp_path: Path, experiment: str, *overrides: str) -> tuple[dict, Path, str]:
    code, out, err = run_cli(capsys, "run", experiment, *SMALL, *overrides, "--out", str(tmp_path))
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1].split("run folder: ", 1)[1])
    return json.loads((run / "results.json").read_text()), run, out


def _consistent(res: dict) -> None:
    assert set(res) >= KEYS
    assert list(res)[:len(RESULTS_SCHEMA)] == list(RESULTS_SCHEMA)  # the layout every task shares
    cm = torch.tensor(res["confusion_matrix"])
    assert int(cm.sum()) == 80 and res["test"]["accuracy"] == pytest.approx(float(cm.trace() / cm.sum()))
    assert 0 <= res["train"]["accuracy"] <= 1 and 0 <= res["val"]["accuracy"] <= 1
    assert set(res["test"]) >= {"loss", "accuracy", "precision", "recall", "f1"}
    assert res["epochs_run"] == 2 and res["best_epoch"] in (1, 2)
    assert res["machine"]["torch"] == torch.__version__ and res["machine"]["device"] == "cpu"  # where it ran
    assert (res["data"]["test"], res["data"]["limit_train"]) == (80, 240)  # on what: a subset, said so


def test_features_run_caches_the_vectors(tiny_bert: Path, tmp_path: Path, capsys):
    res, run, out = _cli_run(capsys, tmp_path, "textcls_features", f"textcls.encoder={tiny_bert}", "run_name=a",
                             "textcls.head=mlp", "textcls.head_hidden=16")
    _consistent(res)
    assert res["method"] == "features" and res["head"] == "mlp"
    assert res["trainable_parameters"] == 32 * 16 + 16 + 16 * 2 + 2  # the MLP head only
    assert "computing mean-pooled features of 320 sentences" in out
    cache = list((tmp_path / "textcls_features" / ".feature-cache").glob("*.pt"))
    assert len(cache) == 1
    for name in ("metrics.csv", "summary.md", "plots/curves.png", "checkpoints/best.pt", "config.yaml"):
        assert (run / name).is_file(), name
    assert "| features |" in (run / "summary.md").read_text()
    again, _, out2 = _cli_run(capsys, tmp_path, "textcls_features", f"textcls.encoder={tiny_bert}", "run_name=b",
                              "textcls.head=mlp", "textcls.head_hidden=16")
    assert "features from the cache" in out2 and "computing" not in out2
    assert again["test"] == res["test"]  # same vectors, same seed: the same run
    _, _, out3 = _cli_run(capsys, tmp_path, "textcls_features", f"textcls.encoder={tiny_bert}", "run_name=c",
                          "textcls.pooling=cls")
    assert "computing cls-pooled features" in out3  # another pooling is another cache entry


def test_finetune_trains_every_weight(tiny_bert: Path, tmp_path: Path, capsys):
    res, run, _out = _cli_run(capsys, tmp_path, "textcls_finetune", f"textcls.encoder={tiny_bert}")
    _consistent(res)
    assert res["method"] == "finetune" and res["trainable_parameters"] == res["parameters"]
    state = load_checkpoint(run / "checkpoints" / "best.pt")["model"]
    assert "encoder.embeddings.word_embeddings.weight" in state and "head.weight" in state
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["split"] for r in rows] == ["train", "val", "train", "val"]


def test_lora_run_checkpoints_adapters_and_head_only(tiny_bert: Path, tmp_path: Path, capsys):
    res, run, out = _cli_run(capsys, tmp_path, "textcls_lora", f"textcls.encoder={tiny_bert}")
    _consistent(res)
    expected = 2 * 8 * (64 + 64) + 66  # q+v, r=8, 2 layers of Linear(32, 32); head Linear(32, 2)
    assert res["trainable_parameters"] == expected and (res["lora_targets"], res["lora_r"]) == ("q+v", 8)
    assert f"trainable parameters {expected:,} = sum r*(d_in+d_out)" in out
    state = load_checkpoint(run / "checkpoints" / "best.pt")["model"]
    weights = {k for k, v in state.items() if v.is_floating_point()}
    assert weights and all("lora_" in k or k.startswith("head.") for k in weights)
    assert sum(state[k].numel() for k in weights) == expected
    assert (run / "adapter" / "adapter_config.json").is_file() and (run / "adapter" / "head.pt").is_file()
    cfg = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and len(cfg["target_modules"]) == 4


def test_lora_resume_after_interruption_equals_an_uninterrupted_run(tiny_bert: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch):
    from dla.text.textcls import TextTrainer

    def run(*extra: str):
        cfg = load_config("textcls_lora", [*SMALL, f"textcls.encoder={tiny_bert}", "train.epochs=3", *extra])
        return run_experiment(cfg, tmp_path / "textcls_lora", DATA_ROOT)

    straight = run("run_name=straight")
    original = TextTrainer.train_one_epoch

    def interrupt_in_epoch_3(self, epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(TextTrainer, "train_one_epoch", interrupt_in_epoch_3)
    with pytest.raises(DlaError, match=r"interrupted; .* resume=true run_name=cut"):
        run("run_name=cut")
    monkeypatch.setattr(TextTrainer, "train_one_epoch", original)
    resumed = run("run_name=cut", "resume=true")
    a, b = straight.read_results(), resumed.read_results()
    assert a["test"] == b["test"] and a["val"] == b["val"] and a["best_epoch"] == b["best_epoch"]
    sa, sb = load_checkpoint(straight.last)["model"], load_checkpoint(resumed.last)["model"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_lora_resume_from_the_middle_of_an_epoch_equals_an_uninterrupted_run(
        tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, terminal_sigint: None) -> None:
    def run(*extra: str):
        cfg = load_config("textcls_lora", [*SMALL, f"textcls.encoder={tiny_bert}", "train.epochs=2", *extra])
        return run_experiment(cfg, tmp_path / "textcls_lora", DATA_ROOT)

    straight = run("run_name=straight")
    monkeypatch.setenv("DLA_FAULT_SIGNAL_AT_STEP", "3:INT")  # a real SIGINT after the 3rd step of epoch 1
    with pytest.raises(DlaError, match=r"interrupted; .*holds epoch 1, batch 3 of \d+;"):
        run("run_name=cut")
    monkeypatch.delenv("DLA_FAULT_SIGNAL_AT_STEP")
    resumed = run("run_name=cut", "resume=true")
    a, b = straight.read_results(), resumed.read_results()
    assert a["test"] == b["test"] and a["val"] == b["val"] and a["best_epoch"] == b["best_epoch"]
    sa, sb = load_checkpoint(straight.last)["model"], load_checkpoint(resumed.last)["model"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

    def rows(run_dir: Path) -> list[dict[str, str]]:  # every epoch's numbers, without the wall clock
        return [{k: v for k, v in r.items() if k != "time"} for r in csv.DictReader((run_dir / "metrics.csv").open())]

    assert rows(straight.path) == rows(resumed.path)


def test_lora_sweep_gives_each_point_a_fresh_encoder(tiny_bert: Path, tmp_path: Path, capsys):
    code, _out, err = run_cli(capsys, "sweep", "textcls_lora", *SMALL, "train.epochs=1", f"textcls.encoder={tiny_bert}",
                             "textcls.lora_targets=q,all-linear", "textcls.lora_r=4", "--name", "s",
                             "--out", str(tmp_path))
    assert code == 0, err
    sweep = tmp_path / "textcls_lora" / "s"
    rows = list(csv.DictReader((sweep / "sweep.csv").open()))
    assert [r["run"] for r in rows] == ["lora_targets=q,lora_r=4", "lora_targets=all-linear,lora_r=4"]
    counts = [json.loads((sweep / r["run"] / "results.json").read_text())["trainable_parameters"] for r in rows]
    # adapters stacked on a reused base would count the first point's adapters again in the second
    assert counts == [2 * 4 * 64 + 66, 2 * 4 * (4 * 64 + 192) + 66]


@needs_minilm
def test_real_minilm_features_beat_chance(tmp_path: Path, capsys):
    res, _, _ = _cli_run(capsys, tmp_path, "textcls_features", "data.limit_train=300", "data.val_size=100",
                         "data.limit_test=100", "train.epochs=30", "textcls.max_length=64")
    assert res["model"] == "all-MiniLM-L6-v2" and res["parameters"] == 22_565_376 + 384 * 2 + 2
    assert res["test"]["accuracy"] > 0.65  # 200 training sentences; the full set gives about 0.77
