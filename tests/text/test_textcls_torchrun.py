"""Text classification under torchrun: 2 CPU processes (gloo) train what 1 process trains, into one run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dla.train.checkpoint import load_checkpoint

from ..conftest import DATA_ROOT
from .conftest import MINILM, TINY_BERT, needs_rt

pytestmark = needs_rt
pytest.importorskip("peft")

# Dropout off: then 1 and 2 processes compute the same function of the same global batches.
SMALL = ["data.limit_train=160", "data.val_size=64", "data.limit_test=64", "data.batch_size=32",
         "data.eval_batch_size=32", "train.epochs=2", "train.early_stopping.patience=0", "textcls.max_length=32",
         "textcls.head_dropout=0", "textcls.lora_dropout=0", "tracking.progress=off", "tracking.tensorboard=false"]


@pytest.fixture(scope="module")
def bert_without_dropout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT of the other text tests with its dropout off: ranks > 0 draw other dropout masks than one
    process does (documented), so only a dropout-free encoder can train identically on 1 and 2 processes."""
    pytest.importorskip("transformers")
    if not MINILM.is_dir():
        pytest.skip(f"no local MiniLM tokenizer to borrow under {MINILM} (set DLA_DATA)")
    import shutil

    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, max_position_embeddings=128, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0, **TINY_BERT)).save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(MINILM / name, folder / name)
    return folder


def _env() -> dict[str, str]:
    env = {**os.environ, "DLA_DATA": str(DATA_ROOT), "DLA_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return env


def _launch(prefix: list[str], args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *prefix, "-m", "dla.cli", *args], capture_output=True, text=True,
                          env=_env(), timeout=300)


@pytest.mark.parametrize("method", ["features", "lora", "finetune"])
def test_two_processes_train_the_same_classifier_as_one_into_one_folder(method: str, bert_without_dropout: Path,
                                                                        tmp_path: Path) -> None:
    args = ["run", f"textcls_{method}", *SMALL, f"textcls.encoder={bert_without_dropout}", "--out", str(tmp_path)]
    one = _launch([], [*args, "run_name=one"])
    assert one.returncode == 0, one.stderr
    two = _launch(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], [*args, "run_name=two"])
    assert two.returncode == 0, two.stdout + two.stderr
    folder = tmp_path / f"textcls_{method}"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["one", "two"]
    a, b = (load_checkpoint(folder / n / "checkpoints" / "last.pt")["model"] for n in ("one", "two"))
    assert a.keys() == b.keys() and a
    for k in a:  # the same steps up to float rounding, which AdamW's normalised steps carry into the weights
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=2e-3, msg=k)
    r1, r2 = (json.loads((folder / n / "results.json").read_text()) for n in ("one", "two"))
    assert r2["machine"]["world_size"] == 2 and r2["data"] == r1["data"]
    assert r2["test"]["accuracy"] == pytest.approx(r1["test"]["accuracy"], abs=2 / 64)  # at most 2 of 64 flip
