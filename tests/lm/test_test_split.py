"""lm.test_fraction: the text's tail is a test split, scored once with the best checkpoint; val lies between."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dla.config import load_config
from dla.errors import DlaError
from dla.models import TextInputs, build_model
from dla.runs import RESULTS_SCHEMA
from dla.tasks import run_experiment
from dla.text.bpc import split_nats
from dla.text.corpus import load_corpus, read_corpus
from dla.text.words import pieces
from dla.train.checkpoint import load_checkpoint

from ..conftest import DATA_ROOT, needs_data

needs_dante = needs_data("dante_inferno")


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_char_splits_are_disjoint_in_order_and_cover_the_text(tmp_path: Path) -> None:
    text = "".join(chr(97 + i % 26) for i in range(1000))
    c = load_corpus("dante_inferno", tmp_path, "char", 0.8, 8, _write(tmp_path, text), test_fraction=0.1)
    assert (len(c.train), len(c.val), len(c.test)) == (800, 100, 100)
    whole = torch.cat([c.train, c.val, c.test])
    assert c.tokenizer.decode(whole.tolist()) == text
    assert c.chars("test") == 100 and c.ids("test") is c.test
    # Without a test fraction the split is exactly the old one: val is the whole tail and there is no test.
    old = load_corpus("dante_inferno", tmp_path, "char", 0.8, 8, _write(tmp_path, text))
    assert old.test is None and torch.equal(old.val, torch.cat([c.val, c.test]))
    with pytest.raises(ValueError, match="no test split"):
        old.ids("test")


def test_word_vocabulary_never_sees_the_test_text(tmp_path: Path) -> None:
    head = "uno due tre uno due tre quattro\n" * 40 + "cinque sei cinque sei\n" * 5
    vocabs = []
    for tail in ("zanzibar uno zanzibar due\n" * 5, "otto nove otto nove\n" * 5):
        n_test = len(pieces(tail))
        frac = (n_test + 0.5) / len(pieces(head + tail))  # the test split is exactly the tail
        c = load_corpus("dante_inferno", tmp_path, "word", 0.8, 4, _write(tmp_path, head + tail), word_min_count=1,
                        test_fraction=frac)
        assert len(c.test) == n_test and c.tokenizer.decode(c.test.tolist()).count("<unk>") > 0
        assert not {"zanzibar", "otto", "nove"} & {p.strip() for p in c.tokenizer.vocab}
        vocabs.append(c.tokenizer.vocab)
    assert vocabs[0] == vocabs[1]


def test_fractions_that_leave_no_validation_text_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DlaError, match=r"leave no text to validate on; keep their sum below 1"):
        load_corpus("dante_inferno", tmp_path, "char", 0.9, 8, _write(tmp_path, "abc" * 100), test_fraction=0.1)
    with pytest.raises(DlaError, match=r"give 240 / 59 / 1 train / val / test tokens, too few for lm.block_size=8"):
        load_corpus("dante_inferno", tmp_path, "char", 0.8, 8, _write(tmp_path, "abc" * 100), test_fraction=0.005)


@needs_dante
def test_a_run_scores_the_whole_test_text_once_with_the_best_checkpoint(tmp_path: Path) -> None:
    over = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "lm.block_size=16", "data.batch_size=8",
            "lm.max_iters=20", "lm.eval_interval=10", "lm.eval_iters=3", "lm.warmup_iters=5", "lm.sample_tokens=0",
            "tracking.tensorboard=false", "tracking.progress=off", "lm.test_fraction=0.05", "train.amp_cpu=false"]
    cfg = load_config("dante_char", over)
    run = run_experiment(cfg, tmp_path / "dante_char", DATA_ROOT)
    res = json.loads(run.results.read_text())
    c = load_corpus("dante_inferno", DATA_ROOT, "char", 0.9, 16, test_fraction=0.05)
    assert len(c.train) + len(c.val) + len(c.test) == len(read_corpus("dante_inferno", DATA_ROOT))
    test, full = res["test"], res["val_full"]
    assert test["tokens"] == len(c.test) and full["tokens"] == len(c.val)
    # The reference: the best checkpoint's nats on the test text, scored independently.
    model = build_model(cfg.model, TextInputs(c.tokenizer.vocab_size, 16), training=False)
    model.load_state_dict(load_checkpoint(run.best)["model"])
    nats = split_nats(model, c.test, 16, 8, torch.device("cpu"), context=c.val)
    assert test["nats"] == pytest.approx(nats, rel=1e-6)
    assert test["bpc"] == pytest.approx(nats / len(c.test) / math.log(2))  # char tokens: one per character
    assert res["val"]["loss"] != test["loss"]
    assert "on the test text (lm.test_fraction=0.05)" in run.summary.read_text()
    assert list(res)[:len(RESULTS_SCHEMA)] == list(RESULTS_SCHEMA)  # the layout every task shares
    assert res["data"] == {"name": "dante_inferno", "source": "original files", "unit": "char tokens",
                           "train": len(c.train), "val": len(c.val), "test": len(c.test)}
    assert res["epochs_configured"] == 20 and res["budget_unit"] == "steps"
