"""`lm.init_from`: a pretrained Hugging Face causal LM (the data root's tiny-gpt2, offline) fine-tuned by dla's LM
loop: it starts from the pretrained weights, its loss falls in 20 steps, an interrupted run resumes to the same
weights as an uninterrupted one, and `dla generate` works on the run folder alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dla.config import load_config
from dla.tasks import run_experiment
from dla.train.checkpoint import load_checkpoint

from ..conftest import DATA_ROOT, needs_data, one_line_error, run_cli

pytest.importorskip("transformers")
TINY_GPT2 = DATA_ROOT / "models" / "tiny-gpt2"
pytestmark = needs_data("dante_inferno", "tiny-gpt2")

FT = [f"lm.init_from={TINY_GPT2}", "lm.block_size=16", "data.batch_size=4", "lm.max_iters=20", "lm.eval_interval=10",
      "lm.eval_iters=3", "lm.warmup_iters=2", "optim.lr=0.01", "lm.sample_tokens=10", "tracking.tensorboard=false",
      "tracking.progress=off"]


def ft_run(tmp: Path, *extra: str):
    return run_experiment(load_config("dante_char", [*FT, *extra]), tmp / "dante_char", DATA_ROOT)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLA_OFFLINE", "1")
        return ft_run(tmp_path_factory.mktemp("ft"), "run_name=straight")


def val_losses(run) -> dict[int, float]:
    rows = [line.split(",") for line in run.metrics.read_text().splitlines()[1:]]
    return {int(r[0]): float(r[2]) for r in rows if r[1] == "val"}


def test_it_starts_from_the_pretrained_weights_and_the_loss_falls_in_20_steps(straight) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dla.text.corpus import BlockSampler, read_corpus

    # Step 0's val loss is the pretrained model's own loss on the same fixed batches, in its own tokenizer.
    tok = AutoTokenizer.from_pretrained(str(TINY_GPT2), local_files_only=True)
    hf = AutoModelForCausalLM.from_pretrained(str(TINY_GPT2), local_files_only=True).eval()
    ids = torch.tensor(tok.encode(read_corpus("dante_inferno", DATA_ROOT)))
    batches = BlockSampler(ids[int(0.9 * len(ids)):], 16, 4, seed=1_000_003)  # as LMTrainer.estimate_loss
    with torch.no_grad():
        losses = [F.cross_entropy(hf(input_ids=x).logits.flatten(0, 1), y.flatten()).item()
                  for x, y in (batches.next() for _ in range(3))]
    val = val_losses(straight)
    assert val[0] == pytest.approx(sum(losses) / 3, rel=1e-4)
    assert val[20] < val[10] < val[0] - 0.1
    res = json.loads(straight.results.read_text())
    assert (res["tokenizer"], res["vocab_size"], res["best_epoch"]) == ("hf", 50257, 20)
    assert res["model"] == f"pretrained {TINY_GPT2}"
    assert (straight.path / "pretrained" / "config.json").is_file()


def test_resume_after_an_interruption_ends_where_an_uninterrupted_run_does(straight, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from dla.text import corpus as corpus_mod

    original = corpus_mod.BlockSampler.next
    calls = {"n": 0}

    def interrupt_later(self):  # Ctrl-C at step 12's batch: evaluations at 0 and 10 draw 2 x 3 batches each
        calls["n"] += 1
        if calls["n"] == 6 + 10 + 6 + 3:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(corpus_mod.BlockSampler, "next", interrupt_later)
    with pytest.raises(Exception, match=r"interrupted.*resume=true"):
        ft_run(tmp_path, "run_name=cut")
    monkeypatch.setattr(corpus_mod.BlockSampler, "next", original)
    assert load_checkpoint(tmp_path / "dante_char" / "cut" / "checkpoints" / "last.pt")["epoch"] == 10
    resumed = ft_run(tmp_path, "run_name=cut", "resume=true")
    a, b = load_checkpoint(straight.last), load_checkpoint(resumed.last)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:  # dropout is on (tiny-gpt2's 0.1): equal weights need the restored random state too
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    assert straight.metrics.read_text() == resumed.metrics.read_text()


def test_generate_works_on_the_fine_tuned_run(straight, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["generate", str(straight.path), "--prompt", "Nel mezzo del cammin", "--max-new-tokens", "12",
            "--seed", "2", "--data-root", str(DATA_ROOT)]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0 and out.startswith("Nel mezzo del cammin") and "12 tokens in" in err
    assert run_cli(capsys, *argv, "--no-kv-cache")[1] == out  # the model's own cache gives the same text


def test_a_hub_name_offline_says_how_to_use_a_local_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    line = one_line_error(capsys, ["run", "dante_char", "lm.init_from=gpt2", "--out", str(tmp_path), "--data-root",
                                   str(DATA_ROOT)], "lm.init_from='gpt2'", "not available offline",
                          "set lm.init_from to a local folder")
    assert str(TINY_GPT2) in line
    assert not list(tmp_path.rglob("config.yaml"))  # refused before a run folder exists
