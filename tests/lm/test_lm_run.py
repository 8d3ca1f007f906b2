"""`dla run dante_char` end to end on the real corpus (a tiny model, a few dozen steps), exact resume, the run
folder's contents, and `dla generate` on the trained run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dla.config import load_config
from dla.errors import ConfigError
from dla.tasks import run_experiment
from dla.text.corpus import CharTokenizer, load_corpus, strip_gutenberg
from dla.train.checkpoint import load_checkpoint

from ..conftest import DATA_ROOT, needs_data, one_line_error, png_size, run_cli

TEXT = DATA_ROOT / "dante_inferno" / "inferno.txt"
needs_dante = needs_data("dante_inferno")

TINY = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "lm.block_size=16", "data.batch_size=8",
        "lm.max_iters=40", "lm.eval_interval=20", "lm.eval_iters=3", "lm.warmup_iters=5", "lm.sample_tokens=60",
        "tracking.tensorboard=false", "tracking.progress=off"]


def tiny_run(tmp: Path, *extra: str):
    return run_experiment(load_config("dante_char", [*TINY, *extra]), tmp / "dante_char", DATA_ROOT)


@needs_dante
def test_split_is_the_first_90_percent_like_nanogpt() -> None:
    text = TEXT.read_text(encoding="utf-8")
    corpus = load_corpus("dante_inferno", DATA_ROOT, "char", 0.9, 64)
    n = int(len(text) * 0.9)
    assert len(corpus.train) == n and len(corpus.val) == len(text) - n
    assert corpus.tokenizer.vocab_size == 72
    assert corpus.tokenizer.decode(corpus.train[:35].tolist()) == text[:35]
    assert corpus.tokenizer.decode(corpus.val[-20:].tolist()) == text[-20:]


def test_gutenberg_header_and_licence_are_stripped() -> None:
    raw = ("The Project Gutenberg eBook\nlicence blah\n*** START OF THE PROJECT GUTENBERG EBOOK INFERNO ***\n\n"
           "Nel mezzo del cammin\n*** END OF THE PROJECT GUTENBERG EBOOK INFERNO ***\nmore licence\n")
    assert strip_gutenberg(raw) == "Nel mezzo del cammin\n"
    assert strip_gutenberg("no markers\n") == "no markers\n"


def test_unknown_characters_are_named() -> None:
    tok = CharTokenizer(list("abc "))
    with pytest.raises(Exception, match=r"2 character\(s\).*'x', 'z'"):
        tok.encode("a zx")


@needs_dante
def test_run_writes_curves_samples_and_results(tmp_path: Path) -> None:
    run = tiny_run(tmp_path)
    res = json.loads(run.results.read_text())
    assert res["machine"]["torch"] == torch.__version__ and res["machine"]["cpu_model"]  # where it ran
    rows = [line.split(",") for line in run.metrics.read_text().splitlines()[1:]]
    assert [(r[0], r[1]) for r in rows] == [(s, sp) for s in ("0", "20", "40") for sp in ("train", "val")]
    val = {int(r[0]): float(r[2]) for r in rows if r[1] == "val"}
    best_step = min(val, key=val.get)
    assert res["best_epoch"] == best_step and res["epochs_run"] == 40
    assert res["test"]["loss"] == pytest.approx(val[best_step], rel=1e-5)
    assert res["test"]["bpc"] == pytest.approx(res["test"]["loss"] / math.log(2))
    assert val[0] == pytest.approx(math.log(72), abs=0.15)  # an untrained model is near uniform
    assert val[40] < val[0] - 0.5
    assert json.loads((run.path / "vocab.json").read_text())["chars"][:3] == ["\n", " ", "!"]
    sample = (run.path / "samples.txt").read_text(encoding="utf-8")
    assert sample.startswith("Inferno • Canto I")  # the default prompt: the text's first line
    assert png_size(run.plots / "curves.png")[0] > 300
    best = load_checkpoint(run.best)
    assert best["epoch"] == best_step


@needs_dante
def test_resume_after_an_interruption_ends_where_an_uninterrupted_run_does(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    straight = tiny_run(tmp_path / "a", "run_name=straight")

    from dla.text import corpus as corpus_mod

    original = corpus_mod.BlockSampler.next
    calls = {"n": 0}

    def interrupt_later(self):  # Ctrl-C during step 27, after the checkpoint taken at step 20
        calls["n"] += 1
        if calls["n"] == 28 + 2 * 3:  # + the two evaluations' batches at steps 0 and 20 (3 each, own samplers)
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(corpus_mod.BlockSampler, "next", interrupt_later)
    with pytest.raises(Exception, match=r"interrupted.*resume=true"):
        tiny_run(tmp_path / "b", "run_name=cut")
    monkeypatch.setattr(corpus_mod.BlockSampler, "next", original)
    assert load_checkpoint(tmp_path / "b" / "dante_char" / "cut" / "checkpoints" / "last.pt")["epoch"] == 20
    resumed = tiny_run(tmp_path / "b", "run_name=cut", "resume=true")
    a, b = load_checkpoint(straight.last), load_checkpoint(resumed.last)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    assert straight.metrics.read_text() == resumed.metrics.read_text()


@needs_dante
def test_an_interrupt_between_evaluations_checkpoints_that_step_and_resume_is_exact(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, terminal_sigint: None) -> None:
    straight = tiny_run(tmp_path / "a", "run_name=straight")
    monkeypatch.setenv("DLA_FAULT_SIGNAL_AT_STEP", "27:INT")  # a real SIGINT right after step 26's update
    with pytest.raises(Exception, match=r"interrupted; .*last.pt holds step 27 \(between evaluations\)"):
        tiny_run(tmp_path / "b", "run_name=cut")
    monkeypatch.delenv("DLA_FAULT_SIGNAL_AT_STEP")
    state = load_checkpoint(tmp_path / "b" / "dante_char" / "cut" / "checkpoints" / "last.pt")
    assert (state["epoch"], state["evaluated"]) == (27, False)
    resumed = tiny_run(tmp_path / "b", "run_name=cut", "resume=true")
    a, b = load_checkpoint(straight.last), load_checkpoint(resumed.last)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    assert straight.metrics.read_text() == resumed.metrics.read_text()


@needs_dante
def test_a_nan_loss_stops_at_its_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dla.models.gpt import GPT
    from dla.train.loop import TrainingDiverged

    forward = GPT.forward
    calls = {"n": 0}

    def poisoned(self, idx, cache=None):
        out = forward(self, idx, cache)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 25:  # the 25th training step is step 24
                return out * float("nan")
        return out

    monkeypatch.setattr(GPT, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match=r"at step 24; the last good checkpoint is .*last\.pt"):
        tiny_run(tmp_path)


def test_task_and_dataset_must_agree() -> None:
    with pytest.raises(ConfigError, match="text corpus"):
        load_config("dante_char", ["data.name=mnist"])
    with pytest.raises(ConfigError, match="is a text corpus"):
        load_config("mnist_mlp", ["data.name=dante_inferno"])


@needs_dante
def test_generate_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tiny_run(tmp_path)
    capsys.readouterr()  # the training log
    argv = ["generate", str(run.path), "--prompt", "Nel mezzo", "--max-new-tokens", "40", "--seed", "3",
            "--data-root", str(DATA_ROOT)]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0 and out.startswith("Nel mezzo") and len(out.rstrip("\n")) >= len("Nel mezzo") + 1
    assert "40 tokens in" in err and "KV cache" in err
    assert run_cli(capsys, *argv)[1] == out  # seeded
    code, out_nc, err_nc = run_cli(capsys, *argv, "--no-kv-cache")
    assert code == 0 and out_nc == out and "no KV cache" in err_nc
    code, out2, _ = run_cli(capsys, *argv, "--num-return-sequences", "2", "--prompt", "Vergine")
    assert code == 0 and out2.count("--- prompt") == 4
    one_line_error(capsys, ["generate", str(run.path), "--prompt", "Hello {}"], "never saw", "'{'", "'}'")
    one_line_error(capsys, ["generate", str(tmp_path)], "not a run folder")
    one_line_error(capsys, ["generate"], "either a run folder")


@needs_data("dante_inferno", "gpt2_tokenizer")
def test_the_same_pipeline_with_gpt2_bpe_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    run = tiny_run(tmp_path, "lm.tokenizer=gpt2", "model.n_embd=16", "lm.max_iters=20", "lm.eval_interval=10",
                   "lm.sample_tokens=10")
    res = json.loads(run.results.read_text())
    assert res["tokenizer"] == "gpt2" and res["vocab_size"] == 50257
    assert res["test"]["loss"] < math.log(50257)
    capsys.readouterr()
    code, out, _ = run_cli(capsys, "generate", str(run.path), "--prompt", "Nel mezzo del cammin", "--max-new-tokens",
                           "5", "--data-root", str(DATA_ROOT))
    assert code == 0 and out.startswith("Nel mezzo del cammin")


@needs_dante
def test_the_llama_model_trains_and_generates_through_the_same_pipeline(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config("dante_llama", [*TINY, "model.n_kv_head=1"])  # grouped-query: 2 query heads, 1 kv head
    run = run_experiment(cfg, tmp_path / "dante_llama", DATA_ROOT)
    res = json.loads(run.results.read_text())
    rows = [line.split(",") for line in run.metrics.read_text().splitlines()[1:]]
    val = {int(r[0]): float(r[2]) for r in rows if r[1] == "val"}
    assert res["model"] == "llama" and sorted(val) == [0, 20, 40]
    assert val[0] == pytest.approx(math.log(72), abs=0.15) and val[40] < val[0] - 0.5
    assert "llama" in run.summary.read_text()
    capsys.readouterr()
    argv = ["generate", str(run.path), "--prompt", "Nel mezzo", "--max-new-tokens", "30", "--seed", "3",
            "--data-root", str(DATA_ROOT)]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0 and out.startswith("Nel mezzo") and "KV cache" in err
    assert run_cli(capsys, *argv, "--no-kv-cache")[1] == out
