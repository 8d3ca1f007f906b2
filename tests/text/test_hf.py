"""GPT-2 tokenization and Hugging Face generation: round trip, CLI output, left padding, seeds, no warnings."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from dla.errors import DlaError

from ..conftest import DATA_ROOT, needs_data, one_line_error, run_cli
from .conftest import MINILM, TINY_GPT2, needs_minilm, needs_tiny_gpt2

pytest.importorskip("transformers")
needs_gpt2_tokenizer = needs_data("gpt2_tokenizer")


@needs_gpt2_tokenizer
def test_gpt2_tokens_ids_and_round_trip():
    from dla.text.hf import tokenize_text

    t = tokenize_text("Hello world!", "gpt2", DATA_ROOT)
    assert t.ids == [15496, 995, 0]  # the published GPT-2 ids
    assert t.tokens == ["Hello", "Ġworld", "!"] and t.pieces == ["Hello", " world", "!"]
    assert t.words == 2 and t.round_trip and t.decoded == "Hello world!"
    odd = "Nel mezzo del cammin di nostra vita — naïve  spaces\tand tabs"
    t = tokenize_text(odd, "gpt2", DATA_ROOT)
    assert t.decoded == odd and len(t.ids) > t.words  # byte-level BPE: lossless, more tokens than words


@needs_gpt2_tokenizer
def test_tokenize_cli(capsys: pytest.CaptureFixture[str]):
    code, out, err = run_cli(capsys, "tokenize", "Hello world!", "--data-root", str(DATA_ROOT))
    assert code == 0 and err == ""
    assert "ids:       [15496, 995, 0]" in out
    assert "words: 2  tokens: 3  tokens per word: 1.50" in out
    assert "round trip: ok (decoded == input)" in out


@needs_minilm
def test_tokenize_cli_refuses_a_lossy_round_trip(capsys: pytest.CaptureFixture[str]):
    line = one_line_error(capsys, ["tokenize", "Hello World", "--tokenizer", str(MINILM)], "round trip differs")
    assert "'hello world'" in line


def test_unknown_tokenizer_offline(capsys: pytest.CaptureFixture[str]):
    one_line_error(capsys, ["tokenize", "x", "--tokenizer", "no-such-org/no-such-model", "--data-root", str(DATA_ROOT)],
                   "'no-such-org/no-such-model' is not available offline", "DLA_OFFLINE")


def _gen(prompts: list[str], **kw) -> list[list[str]]:
    from dla.text.hf import generate_hf

    args = {"max_new_tokens": 6, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "num_return_sequences": 1,
            "seed": 0, "data_root": DATA_ROOT, "device": "cpu", **kw}
    return generate_hf(str(TINY_GPT2), prompts, **args)


@needs_tiny_gpt2
def test_left_padded_batch_equals_each_prompt_alone(recwarn: pytest.WarningsRecorder,
                                                    capfd: pytest.CaptureFixture[str]):
    prompts = ["The meaning of life is", "Hi", "Once upon a time, in a land far away,"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        batched = _gen(prompts)
    alone = [_gen([p])[0] for p in prompts]
    assert batched == alone
    for p, outs in zip(prompts, batched, strict=True):
        assert len(outs) == 1 and outs[0].startswith(p) and len(outs[0]) > len(p)
    assert len(recwarn) == 0
    assert capfd.readouterr().err == ""  # no 'Setting pad_token_id' or attention-mask advice on stderr


@needs_tiny_gpt2
def test_sampling_is_reproducible_by_seed_and_returns_n_sequences():
    kw = {"temperature": 1.0, "top_k": 50, "top_p": 0.95, "num_return_sequences": 3, "max_new_tokens": 8}
    a = _gen(["Hello, my name is", "The"], seed=1, **kw)
    b = _gen(["Hello, my name is", "The"], seed=1, **kw)
    c = _gen(["Hello, my name is", "The"], seed=2, **kw)
    assert a == b and a != c
    assert [len(outs) for outs in a] == [3, 3]
    assert all(o.startswith("Hello, my name is") for o in a[0]) and all(o.startswith("The") for o in a[1])
    assert len(set(a[0])) > 1  # three samples, not one repeated


@needs_tiny_gpt2
def test_generation_arguments_are_checked():
    with pytest.raises(DlaError, match="greedy"):
        _gen(["x"], num_return_sequences=2)
    with pytest.raises(DlaError, match="top-p"):
        _gen(["x"], temperature=1.0, top_p=0.0)


def test_gpt2_weights_offline_name_the_local_model():
    from dla.text.hf import generate_hf

    with pytest.raises(DlaError) as info:
        generate_hf("gpt2", ["x"], max_new_tokens=2, temperature=0.0, top_k=0, top_p=1.0, num_return_sequences=1,
                    seed=0, data_root=DATA_ROOT)
    msg = str(info.value)
    assert "not available offline" in msg and "\n" not in msg
    if TINY_GPT2.is_dir():
        assert f"--model {TINY_GPT2}" in msg


def test_missing_transformers_says_how_to_install(monkeypatch: pytest.MonkeyPatch):
    import sys

    from dla.text.hf import require_transformers

    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    with pytest.raises(DlaError, match=r"pip install 'dla\[nlp\]'"):
        require_transformers()


def test_cli_import_does_not_load_transformers(tmp_path: Path):
    import subprocess
    import sys

    code = "import sys, dla.cli, dla.config, dla.tasks; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
