"""Text-classification datasets through Hugging Face `datasets`, offline: small local copies in each format
(save_to_disk, parquet, CSV) built here, read against the `datasets` library's own reading of the same files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dla.config import DataConfig, load_config
from dla.errors import ConfigError, DataError
from dla.text.datasets import load_sentence_splits

from ..conftest import one_line_error, run_cli

datasets = pytest.importorskip("datasets")

POLARITY = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
YAHOO_TOPICS = [f"topic {i}" for i in range(10)]


def _rows(n: int, offset: int = 0, k: int = 2) -> dict[str, list]:
    # sorted by label like the Hub's IMDB: a first-N limit would see one class only
    return {"text": [f"review {offset + i}" for i in range(n)], "label": [i * k // n for i in range(n)]}


def _pairs(splits) -> set[tuple[str, int]]:
    parts = (splits.train, splits.val, splits.test)
    return {(t, int(y)) for p in parts for t, y in zip(p.texts, p.labels, strict=True)}


def _cfg(name: str, path: Path | str = "", **kw) -> DataConfig:
    return DataConfig(name=name, path=str(path), val_size=kw.pop("val_size", 20), **kw)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A save_to_disk DatasetDict, train + test, ClassLabel names."""
    folder = tmp_path / "saved"
    datasets.DatasetDict(train=datasets.Dataset.from_dict(_rows(100), features=POLARITY),
                         test=datasets.Dataset.from_dict(_rows(40, 1000), features=POLARITY)).save_to_disk(folder)
    return folder


def test_save_to_disk_folder_classes_from_features_val_carved_by_seed(saved: Path):
    a, b, c = (load_sentence_splits(_cfg(f"hf:{saved}"), Path("/nonexistent"), seed=s) for s in (0, 0, 1))
    assert a.classes == ["neg", "pos"]
    assert (len(a.train), len(a.val), len(a.test)) == (80, 20, 40)
    ref = datasets.load_from_disk(str(saved))
    assert _pairs(a) == {(r["text"], r["label"]) for s in ("train", "test") for r in ref[s]}
    assert a.test.texts == list(ref["test"]["text"])  # the dataset's own test split, untouched
    assert a.val.texts == b.val.texts and a.val.texts != c.val.texts  # seeded validation split
    assert not set(a.val.texts) & set(a.train.texts)


def test_limits_are_a_fixed_random_subset_holding_both_classes(saved: Path):
    cfg = _cfg(f"hf:{saved}", limit_train=50, limit_test=10, val_size=10)
    a, b = (load_sentence_splits(cfg, Path("/"), seed=s) for s in (0, 1))
    assert (len(a.train), len(a.val), len(a.test)) == (40, 10, 10)
    assert set(a.train.texts + a.val.texts) == set(b.train.texts + b.val.texts)  # the same 50 rows for every seed
    assert a.test.texts == b.test.texts
    assert 0 < int(a.train.labels.sum()) < 40 and 0 < int(a.test.labels.sum()) < 10


def test_parquet_folder_in_the_hub_layout_with_a_validation_split(tmp_path: Path):
    folder = tmp_path / "imdb" / "plain_text"
    folder.mkdir(parents=True)
    for split, n, off in (("train", 60, 0), ("validation", 12, 500), ("test", 30, 1000), ("unsupervised", 9, 2000)):
        datasets.Dataset.from_dict(_rows(n, off), features=POLARITY).to_parquet(
            folder / f"{split}-00000-of-00001.parquet")
    # the preset reads <data root>/imdb in any format, with its own columns
    s = load_sentence_splits(_cfg("imdb"), tmp_path, seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (60, 12, 30)  # the dataset's validation split, as it is
    assert s.classes == ["neg", "pos"]  # ClassLabel names survive parquet (the features metadata)
    ref = datasets.load_dataset("parquet", data_files={"train": str(folder / "train-00000-of-00001.parquet")},
                                cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert s.train.texts == list(ref["text"]) and s.train.labels.tolist() == list(ref["label"])
    assert not any(t.startswith("review 2") and len(t) == 11 for t in s.train.texts + s.test.texts)  # unsupervised


def test_single_csv_test_carved_with_a_fixed_seed_classes_named_by_index(tmp_path: Path):
    csv = tmp_path / "reviews.csv"
    datasets.Dataset.from_dict(_rows(200, k=5)).to_csv(csv, index=False)
    a, b = (load_sentence_splits(_cfg("hf:reviews.csv", val_size=30), tmp_path, seed=s) for s in (0, 7))
    assert (len(a.train), len(a.val), len(a.test)) == (150, 30, 20)
    assert a.test.texts == b.test.texts and a.val.texts != b.val.texts
    assert a.classes == ["0", "1", "2", "3", "4"]
    ref = datasets.load_dataset("csv", data_files=str(csv), cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert _pairs(a) == {(r["text"], r["label"]) for r in ref}


def test_yahoo_preset_joins_title_question_and_answer(tmp_path: Path):
    feats = datasets.Features({"id": datasets.Value("int32"), "topic": datasets.ClassLabel(names=YAHOO_TOPICS),
                               "question_title": datasets.Value("string"),
                               "question_content": datasets.Value("string"),
                               "best_answer": datasets.Value("string")})
    rows = {"id": list(range(40)), "topic": [i % 10 for i in range(40)],
            "question_title": [f"t{i}" for i in range(40)],
            "question_content": ["" if i % 2 else f"q{i}" for i in range(40)],
            "best_answer": [f"a{i}" for i in range(40)]}
    datasets.DatasetDict(train=datasets.Dataset.from_dict(rows, features=feats),
                         test=datasets.Dataset.from_dict(rows, features=feats)).save_to_disk(
        tmp_path / "yahoo_answers_topics")
    s = load_sentence_splits(_cfg("yahoo_answers_topics", val_size=5), tmp_path, seed=0)
    assert s.classes == YAHOO_TOPICS
    assert s.test.texts[:2] == ["t0\nq0\na0", "t1\na1"]  # an empty question is skipped, not a blank line
    assert s.test.labels[:2].tolist() == [0, 1]


def test_data_path_and_columns_override_the_defaults(tmp_path: Path):
    csv = tmp_path / "train.csv"
    csv.write_text("body,stars\nfine,1\nbad,0\nok,1\nmeh,0\ngood,1\n", encoding="utf-8")
    s = load_sentence_splits(_cfg("hf:anything", csv, text_column="body", label_column="stars", val_size=1),
                             Path("/nonexistent"), seed=0)
    assert sorted(s.train.texts + s.val.texts + s.test.texts) == ["bad", "fine", "good", "meh", "ok"]


@pytest.mark.parametrize(("content", "needle"), [
    ("text,label\nfine,pos\nbad,neg\n", "labels must be integer class indices, but column 'label' holds string"),
    ("text,label\nfine,1.5\nbad,0\n", "labels must be integer class indices"),
    ("words,label\nfine,1\nbad,0\n", "has no column 'text'; its columns are words, label"),
    ("text,label\n3,1\n4,0\n", "column 'text' holds int64, not text"),
    ("text,label\n" + "fine,1\nbad,-1\n" * 5, "label -1 in column 'label' is not a class index"),
    ("text,label\n" + "fine,1\nbad,1\n" * 5, "hold a single class"),
    ("text,label\nfine,1\nbad,\n", "missing label"),
])
def test_bad_tables_are_one_clear_data_error(tmp_path: Path, content: str, needle: str):
    (tmp_path / "d.csv").write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=None) as err:
        load_sentence_splits(_cfg("hf:d.csv", val_size=1), tmp_path, seed=0)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_empty_split_missing_train_and_bad_files(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    datasets.Dataset.from_dict(_rows(10), features=POLARITY).to_parquet(empty / "train.parquet")
    datasets.Dataset.from_dict({"text": [], "label": []}, features=POLARITY).to_parquet(empty / "test.parquet")
    with pytest.raises(DataError, match=r"split 'test' is empty \(0 rows\)"):
        load_sentence_splits(_cfg("hf:empty", val_size=2), tmp_path, seed=0)
    saved = tmp_path / "saved_empty"  # datasets itself cannot read back a 0-row save_to_disk split: one line too
    datasets.DatasetDict(train=datasets.Dataset.from_dict(_rows(10), features=POLARITY),
                         test=datasets.Dataset.from_dict({"text": [], "label": []}, features=POLARITY),
                         ).save_to_disk(saved)
    with pytest.raises(DataError, match=r"cannot read the save_to_disk folder|split 'test' is empty"):
        load_sentence_splits(_cfg("hf:saved_empty", val_size=2), tmp_path, seed=0)
    only_test = tmp_path / "only_test"
    only_test.mkdir()
    (only_test / "test.csv").write_text("text,label\na,0\nb,1\n")
    with pytest.raises(DataError, match="has no train split"):
        load_sentence_splits(_cfg("hf:only_test"), tmp_path, seed=0)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really a parquet file")
    with pytest.raises(DataError, match=r"cannot read .*broken\.parquet"):
        load_sentence_splits(_cfg("hf:broken.parquet"), tmp_path, seed=0)
    (tmp_path / "notes").mkdir()
    with pytest.raises(DataError, match=r"holds no \.parquet or \.csv files"):
        load_sentence_splits(_cfg("hf:notes"), tmp_path, seed=0)
    with pytest.raises(ConfigError, match=r"data\.val_size"):
        load_sentence_splits(_cfg(f"hf:{tmp_path / 'only_test' / 'test.csv'}", val_size=5), tmp_path, seed=0)
    with pytest.raises(ConfigError, match=r"data\.val_size' must be >= 1"):
        load_sentence_splits(_cfg("hf:empty/train.parquet", val_size=0), tmp_path, seed=0)


def test_offline_without_a_local_copy_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DLA_OFFLINE", "1")
    with pytest.raises(DataError, match=r"no local copy at .*yelp_review_full and offline"):
        load_sentence_splits(_cfg("yelp_review_full"), tmp_path, seed=0)
    with pytest.raises(DataError, match="'stanfordnlp/imdb' cannot be downloaded"):
        load_sentence_splits(_cfg("hf:stanfordnlp/imdb"), tmp_path, seed=0)
    with pytest.raises(ConfigError, match="neither a local path"):
        load_sentence_splits(_cfg("hf:../../etc passwd"), tmp_path, seed=0)


def test_config_accepts_hf_names_for_textcls_only():
    cfg = load_config("textcls_features", ["data.name=hf:stanfordnlp/imdb", "data.text_column=a+b"])
    assert cfg.data.name == "hf:stanfordnlp/imdb" and cfg.data.text_column == "a+b"
    assert load_config("textcls_features", ["data.name=imdb"]).data.name == "imdb"
    with pytest.raises(ConfigError, match="is a sentence dataset, but task=classify"):
        load_config("mnist_mlp", ["data.name=hf:stanfordnlp/imdb"])
    with pytest.raises(ConfigError, match="rotten_tomatoes has none"):
        load_sentence_splits(DataConfig(name="rotten_tomatoes", text_column="review"), Path("/"), seed=0)
    for empty in ("hf:", "hf:  "):  # no id
        with pytest.raises(ConfigError, match=r"data\.name"):
            load_config("textcls_features", [f"data.name={empty}"])


def test_bad_labels_through_the_cli_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "d.csv").write_text("text,label\nfine,pos\nbad,neg\n", encoding="utf-8")
    one_line_error(capsys, ["run", "textcls_features", "data.name=hf:d.csv", "--data-root", str(tmp_path),
                            "--out", str(tmp_path / "runs")], "labels must be integer class indices")
    assert not (tmp_path / "runs" / "textcls_features").exists() or not any(
        p.name != ".feature-cache" for p in (tmp_path / "runs" / "textcls_features").iterdir())


def test_features_run_on_a_local_csv(tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    words = (["great", "superb", "lovely"], ["awful", "dull", "boring"])
    label = [int(i % 5 == 0) for i in range(120)]  # imbalanced (1 in 5): macro-F1 and accuracy part ways
    rows = [f"a {words[y][i % 3]} film {i}" for i, y in enumerate(label)]
    lines = "".join(f"{r},{y}\n" for r, y in zip(rows, label, strict=True))
    (tmp_path / "films.csv").write_text("text,label\n" + lines)
    code, out, err = run_cli(capsys, "run", "textcls_features", "data.name=hf:films.csv", "data.val_size=20",
                             f"textcls.encoder={tiny_bert}", "train.epochs=4", "tracking.progress=off",
                             "train.early_stopping.metric=val/f1", "train.early_stopping.patience=0",
                             "tracking.tensorboard=false", "--data-root", str(tmp_path), "--out", str(tmp_path / "r"))
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1].split("run folder: ", 1)[1])
    res = json.loads((run / "results.json").read_text())
    assert res["dataset"] == "hf:films.csv" and res["classes"] == ["0", "1"]
    assert (res["data"]["train"], res["data"]["val"], res["data"]["test"]) == (88, 20, 12)
    # macro-F1 picked the best epoch: the first epoch of the highest val f1 in metrics.csv
    with (run / "metrics.csv").open() as f:
        val = [r for r in csv.DictReader(f) if r["split"] == "val"]
    best = max(val, key=lambda r: (float(r["f1"]), -int(r["epoch"])))
    assert res["selected_by"] == "val/f1" and res["best_epoch"] == int(best["epoch"])
    assert res["val"]["f1"] == pytest.approx(float(best["f1"]))
    assert "val/f1 picks it" in (run / "summary.md").read_text()


def test_a_single_file_copy_of_rotten_tomatoes_splits_like_the_rotten_tomatoes_loader(tmp_path: Path):
    from dla.text.rotten import Sentences, split_sentences

    n = 400
    texts, labels = [f"s{i}" for i in range(n)], [int(i >= n // 2) for i in range(n)]
    datasets.Dataset.from_dict({"text": texts, "label": labels}, features=POLARITY).to_parquet(tmp_path / "rt.parquet")
    import torch

    cfg = _cfg("hf:rt.parquet", val_size=40)
    ours = load_sentence_splits(cfg, tmp_path, seed=3)
    rt = split_sentences(Sentences(texts, torch.tensor(labels)), DataConfig(name="rotten_tomatoes", val_size=40), 3)
    for a, b in ((ours.train, rt.train), (ours.val, rt.val), (ours.test, rt.test)):
        assert a.texts == b.texts and a.labels.tolist() == b.labels.tolist()
