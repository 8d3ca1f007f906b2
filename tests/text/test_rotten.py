"""Rotten Tomatoes: latin-1 files, the 8,530 / 1,066 / 1,066 split, and clear errors for unreadable files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from dla.config import DataConfig
from dla.errors import ConfigError, DataError
from dla.text.rotten import Sentences, load_sentences, read_lines, split_sentences

from ..conftest import DATA_ROOT, one_line_error
from .conftest import needs_rt

RT = DATA_ROOT / "rotten_tomatoes" / "rt-polaritydata"


def _synthetic(n: int = 10662) -> Sentences:
    return Sentences([f"s{i}" for i in range(n)], (torch.arange(n) >= n // 2).long())


def test_split_sizes_are_the_public_ones_and_disjoint():
    s = split_sentences(_synthetic(), DataConfig(name="rotten_tomatoes", val_size=1066), seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (8530, 1066, 1066)
    parts = [set(p.texts) for p in (s.train, s.val, s.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(parts[0] | parts[1] | parts[2]) == 10662
    # labels travel with their sentences
    for p in (s.train, s.val, s.test):
        assert all(int(p.labels[i]) == (int(t[1:]) >= 5331) for i, t in enumerate(p.texts))
    assert 400 < int(s.test.labels.sum()) < 666  # a shuffled draw holds both classes


def test_split_is_deterministic_test_fixed_val_by_seed():
    cfg = DataConfig(name="rotten_tomatoes", val_size=1066)
    a, b, c = (split_sentences(_synthetic(), cfg, seed=s) for s in (0, 0, 1))
    assert a.train.texts == b.train.texts and a.val.texts == b.val.texts and a.test.texts == b.test.texts
    assert a.test.texts == c.test.texts  # every seed is scored on the same test sentences
    assert a.val.texts != c.val.texts


def test_limits_and_a_val_size_that_leaves_nothing():
    cfg = DataConfig(name="rotten_tomatoes", val_size=50, limit_train=200, limit_test=30)
    s = split_sentences(_synthetic(), cfg, seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (150, 50, 30)
    with pytest.raises(ConfigError, match=r"data\.val_size"):
        split_sentences(_synthetic(), DataConfig(name="rotten_tomatoes", val_size=200, limit_train=200), seed=0)


@needs_rt
def test_real_files_decode_as_latin1():
    data = load_sentences(DATA_ROOT)
    assert len(data) == 10662 and int(data.labels.sum()) == 5331
    assert "the action clichés just pile up ." in data.texts  # byte 0xe9
    # byte 0x85 is a line break to str.splitlines; the files still hold 5,331 sentences each
    assert sum("\x85" in t for t in data.texts) > 0


@needs_rt
def test_a_utf8_copy_reads_the_same(tmp_path: Path):
    original = read_lines(RT / "rt-polarity.pos")
    copy = tmp_path / "pos"
    copy.write_text("\n".join(original) + "\n", encoding="utf-8")
    assert read_lines(copy) == original


def test_wrong_encoding_is_one_clear_error(tmp_path: Path):
    bad = tmp_path / "rt-polarity.pos"
    bad.write_text("a fine film .\nan awful one .\n", encoding="utf-16")
    with pytest.raises(DataError, match=r"not latin-1 or UTF-8 text .*UTF-16"):
        read_lines(bad)


@needs_rt
def test_wrong_encoding_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    folder = tmp_path / "rotten_tomatoes" / "rt-polaritydata"
    folder.mkdir(parents=True)
    shutil.copy(RT / "rt-polarity.neg", folder / "rt-polarity.neg")
    text = (RT / "rt-polarity.pos").read_bytes().decode("latin-1")
    (folder / "rt-polarity.pos").write_bytes(text.encode("utf-16"))
    one_line_error(capsys, ["run", "textcls_features", "--data-root", str(tmp_path), "--out", str(tmp_path / "r")],
                   "rt-polarity.pos", "UTF-16")
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("config.yaml"))


def test_missing_files_offline(tmp_path: Path):
    with pytest.raises(DataError, match="Rotten Tomatoes not found"):
        load_sentences(tmp_path)
