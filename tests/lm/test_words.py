"""The word-level tokenizer (vocabulary from the training part only) and bits per character for every tokenizer,
checked against hand computations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dla.config import load_config
from dla.tasks import run_experiment
from dla.text.bpc import bits_per_character, estimate_bpc, split_nats
from dla.text.corpus import load_corpus, load_tokenizer_file, read_corpus
from dla.text.words import UNK, WordTokenizer, pieces

from ..conftest import DATA_ROOT, needs_data, run_cli

TEXT = DATA_ROOT / "dante_inferno" / "inferno.txt"
needs_dante = needs_data("dante_inferno")


def test_pieces_join_back_exactly_and_attach_one_leading_space():
    text = "Nel mezzo del cammin  di nostra vita\nmi ritrovai, per una selva oscura:\n\n  ché la   diritta\t"
    ps = pieces(text)
    assert "".join(ps) == text
    assert ps[:4] == ["Nel", " mezzo", " del", " cammin"]
    assert ps[4:6] == [" ", " di"]  # two spaces: one alone, one with the word
    assert " ritrovai" in ps and "," in ps and " ché" in ps  # à-like letters are word characters


@needs_dante
def test_round_trip_of_in_vocabulary_text():
    text = TEXT.read_text(encoding="utf-8")
    tok = WordTokenizer.from_pieces(pieces(text), min_count=1)
    assert tok.decode(tok.encode(text)) == text
    assert 0 not in tok.encode(text)


def test_vocabulary_min_count_size_cap_and_order():
    train = pieces("a b a c a b d")
    tok = WordTokenizer.from_pieces(train, min_count=2)
    assert tok.vocab == [UNK, " a", " b"]  # "a" (line start) once, " a" twice; c and d once
    assert tok.encode(" a c") == [1, 0]
    assert tok.decode([2, 0]) == " b<unk>"
    assert WordTokenizer.from_pieces(train, min_count=1, max_size=3).vocab == [UNK, " a", " b"]
    with pytest.raises(Exception, match="starts with <unk>"):
        WordTokenizer(["a", UNK])


def test_the_vocabulary_never_sees_validation_text(tmp_path: Path):
    train_part = "uno due tre uno due tre quattro\n" * 40
    for val_part in ("zanzibar uno due zanzibar\n" * 5, "otto nove due\n" * 5):
        path = tmp_path / "c.txt"
        path.write_text(train_part + val_part, encoding="utf-8")
        n = len(pieces(train_part))
        frac = (n + 0.5) / len(pieces(train_part + val_part))  # the split falls right after the training part
        c = load_corpus("dante_inferno", tmp_path, "word", frac, 4, str(path), word_min_count=1)
        assert c.tokenizer.vocab == WordTokenizer.from_pieces(pieces(train_part), min_count=1).vocab
        assert not {" zanzibar", "zanzibar", " otto", "otto", " nove"} & set(c.tokenizer.vocab)
        assert c.train_chars == len(train_part) and c.val_chars == len(val_part)
        assert c.tokenizer.decode(c.train.tolist()) == train_part
    assert c.val.tolist()[:3] == [0, 0, c.tokenizer.index[" due"]]  # "otto", " nove" are <unk>


def test_bits_per_character_by_hand():
    # 120 tokens of a uniform 8-way model cost 120 ln 8 nats = 360 bits; over 90 characters: 4 bits per character
    assert bits_per_character(120 * math.log(8), 90) == pytest.approx(4.0)
    assert estimate_bpc(math.log(8), 120, 90) == pytest.approx(4.0)
    assert estimate_bpc(1.5, 100, 100) == pytest.approx(1.5 / math.log(2))  # characters: per token = per char


class Bigram(torch.nn.Module):
    """Logits depend on the previous token only, so the total is the same for any windowing: a hand reference."""

    def __init__(self, v: int) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(v, v, generator=torch.Generator().manual_seed(0)))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx]


@pytest.mark.parametrize(("block", "batch"), [(1, 1), (4, 3), (7, 2), (50, 8), (64, 1)])
def test_split_nats_scores_every_token_once(block: int, batch: int):
    v = 6
    ids = torch.randint(v, (50,), generator=torch.Generator().manual_seed(1))
    model = Bigram(v)
    logp = torch.log_softmax(model.table.detach(), dim=-1)
    by_hand = -sum(float(logp[ids[i - 1], ids[i]]) for i in range(1, len(ids)))
    assert split_nats(model, ids, block, batch, torch.device("cpu")) == pytest.approx(by_hand, rel=1e-6)
    context = torch.tensor([3])  # the training text's last token: the first token is scored too
    with_first = by_hand - float(logp[3, ids[0]])
    assert split_nats(model, ids, block, batch, torch.device("cpu"), context=context) == pytest.approx(with_first,
                                                                                                        rel=1e-6)


@needs_dante
def test_a_word_model_run_reports_bits_per_character(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    over = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "lm.block_size=16", "data.batch_size=8",
            "lm.max_iters=20", "lm.eval_interval=10", "lm.eval_iters=3", "lm.warmup_iters=5", "lm.sample_tokens=20",
            "tracking.tensorboard=false", "tracking.progress=off", "lm.tokenizer=word", "lm.word_min_count=3"]
    run = run_experiment(load_config("dante_char", over), tmp_path / "dante_char", DATA_ROOT)
    res = json.loads(run.results.read_text())
    c = load_corpus("dante_inferno", DATA_ROOT, "word", 0.9, 16, word_min_count=3)
    assert res["tokenizer"] == "word" and res["vocab_size"] == c.tokenizer.vocab_size
    assert res["test"]["bpc"] == pytest.approx(res["test"]["loss"] * len(c.val) / c.val_chars / math.log(2))
    full = res["val_full"]
    assert full["tokens"] == len(c.val) and full["characters"] == c.val_chars
    assert c.train_chars + c.val_chars == len(read_corpus("dante_inferno", DATA_ROOT))
    assert full["bpc"] == pytest.approx(full["nats"] / full["characters"] / math.log(2))
    assert full["unknown_tokens"] == int((c.val == 0).sum()) > 0
    assert 0 < full["bpc"] < math.log2(c.tokenizer.vocab_size) * len(c.val) / c.val_chars + 0.5
    tok = load_tokenizer_file(run.path / "vocab.json", DATA_ROOT)
    assert tok.name == "word" and tok.vocab == c.tokenizer.vocab
    capsys.readouterr()
    code, out, _ = run_cli(capsys, "generate", str(run.path), "--prompt", "Nel mezzo del cammin", "--max-new-tokens",
                           "5", "--data-root", str(DATA_ROOT))
    assert code == 0 and out.startswith("<unk> mezzo del cammin")  # "Nel" opens lines: rare without a space
