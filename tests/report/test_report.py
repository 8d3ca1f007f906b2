"""`dla report` and `dla compare`: the HTML reads back to the numbers in results.json, mean ± std is recomputed
independently, the Markdown holds the same tables, and bad input fails with one line and leaves nothing behind."""

from __future__ import annotations

import html
import json
import shutil
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest

from dla.report.tables import fmt
from dla.sweep import run_sweep

from ..conftest import DATA_ROOT, QUICK, needs_mnist, one_line_error, run_cli
from .pages import column, png_sizes, read_page

pytestmark = needs_mnist
METRICS = ["loss", "accuracy", "precision", "recall", "f1"]
HEAD = {"loss": "Loss", "accuracy": "Accuracy", "precision": "Precision", "recall": "Recall", "f1": "F1"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Two depths x two seeds of a tiny MLP, one epoch each (a few seconds)."""
    out = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLA_OFFLINE", "1")
        yield run_sweep("mnist_mlp", [*QUICK, "train.epochs=1", "tracking.tensorboard=false", "model.depth=1,2",
                                      "seed=0,1"], out, DATA_ROOT, "s", progress_mode="off")


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def test_report_of_one_run(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = sweep / "depth=1,seed=0"
    code, out, _ = run_cli(capsys, "report", str(run))
    assert code == 0 and out.strip() == str(run / "report.html")
    text = (run / "report.html").read_text()
    page = read_page(text)
    assert page.errors == [] and page.external == []
    assert page.title == "mnist_mlp / depth=1,seed=0"
    res = _results(run)
    # The results table: one row per split, every cell the number of results.json (exactly) and its usual text.
    assert page.headers["results"] == ["Split", *(HEAD[m] for m in METRICS)]
    assert [r[0].text for r in page.tables["results"]] == ["train", "val", "test"]  # train: the best epoch's
    for row in page.tables["results"]:
        for m, cell in zip(METRICS, row[1:], strict=True):
            assert float(cell.value) == res[row[0].text][m]
            assert cell.text == fmt(m, res[row[0].text][m])
    info = {r[0].text: r[1].text for r in page.tables["run"]}
    assert info["parameters"] == str(res["parameters"]) and info["best_epoch"] == str(res["best_epoch"])
    # Curves and the confusion matrix, as whole PNGs inside the page; the config verbatim (escaped).
    sizes = png_sizes(page)
    assert len(sizes) >= 2 and all(w > 100 and h > 100 for w, h in sizes)
    assert html.escape((run / "config.yaml").read_text()) in text


def test_report_of_a_sweep_is_mean_and_std_of_its_runs(sweep: Path, capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
    out = tmp_path / "sweep.html"
    code, printed, _ = run_cli(capsys, "report", str(sweep), "--out", str(out), "--markdown")
    assert code == 0 and printed.split() == [str(out), str(tmp_path / "sweep.md")]
    page = read_page(out.read_text())
    assert page.errors == [] and page.external == []
    runs = {d: [_results(sweep / f"depth={d},seed={s}")["test"] for s in (0, 1)] for d in (1, 2)}
    labels = [r[0].text for r in page.tables["comparison"]]
    assert labels == ["depth=1", "depth=2"]
    for m in METRICS:
        cells = column(page, "comparison", HEAD[m])
        means = []
        for d, cell in zip((1, 2), cells, strict=True):
            vals = [t[m] for t in runs[d]]
            mean, std = statistics.fmean(vals), statistics.stdev(vals)
            assert float(cell.value) == pytest.approx(mean, rel=1e-12)
            assert float(cell.std) == pytest.approx(std, rel=1e-12)
            want = f"{mean:.4f} ± {std:.4f}" if m == "loss" else f"{100 * mean:.2f} ± {100 * std:.2f}%"
            assert cell.text == want
            means.append(mean)
        best = means.index(min(means) if m == "loss" else max(means))
        assert [c.best for c in cells] == [i == best for i in range(2)], m
    assert [c.text for c in column(page, "comparison", "n")] == ["2", "2"]
    # One row per run with its own numbers, and only the keys that differ in the config table.
    for row in page.tables["runs"]:
        test = _results(sweep / row[0].text)["test"]
        assert [float(c.value) for c in row[1:]] == [test[m] for m in METRICS]
    assert page.headers["config-diff"] == ["Run", "seed", "model.depth"]
    assert len(png_sizes(page)) >= 2  # overlaid curves

    md = (tmp_path / "sweep.md").read_text()
    for row in page.tables["comparison"]:
        cells = [f"**{c.text}**" if c.best else c.text for c in row]
        assert "| " + " | ".join(cells) + " |" in md
    for row in page.tables["runs"]:
        assert "| " + " | ".join(c.text for c in row) + " |" in md


def _fake_lm_run(src: Path, dst: Path, width: int, bpc: float, samples: str) -> Path:
    """A run folder shaped like a character LM's: test holds loss and bpc only, samples.txt beside it."""
    dst.mkdir(parents=True)
    shutil.copy(src / "metrics.csv", dst / "metrics.csv")
    (dst / "config.yaml").write_text((src / "config.yaml").read_text().replace("width: 64", f"width: {width}"))
    res = _results(src)
    for key in ("confusion_matrix", "classes"):
        res.pop(key)
    res.update(run=dst.name, train={"loss": 1.4, "bpc": bpc - 0.1}, val={"loss": 1.5, "bpc": bpc + 0.1},
               test={"loss": bpc * 0.69, "bpc": bpc})
    (dst / "results.json").write_text(json.dumps(res))
    (dst / "samples.txt").write_text(samples)
    return dst


def test_report_takes_its_columns_from_the_results(sweep: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    sample = "Nel mezzo del cammin <script>alert('x')</script> & di nostra vita\n"
    a = _fake_lm_run(sweep / "depth=1,seed=0", tmp_path / "lm" / "a", 64, 2.25, sample)
    b = _fake_lm_run(sweep / "depth=1,seed=0", tmp_path / "lm" / "b", 128, 2.0, sample)
    assert run_cli(capsys, "report", str(a))[0] == 0
    text = (a / "report.html").read_text()
    page = read_page(text)
    assert page.errors == []
    assert page.headers["results"] == ["Split", "Loss", "BPC"]
    assert [float(c.value) for c in column(page, "results", "BPC")] == [2.15, 2.35, 2.25]
    assert "<script>alert" not in text and html.escape(sample) in text
    assert len(png_sizes(page)) >= 1  # curves drawn from metrics.csv (the run has no plots/)

    # Two configs: BPC is better when lower, so the smaller one is marked.
    code, _, _ = run_cli(capsys, "report", str(a), str(b), "--out", str(tmp_path / "ab.html"))
    assert code == 0
    page = read_page((tmp_path / "ab.html").read_text())
    assert [r[0].text for r in page.tables["comparison"]] == ["width=64", "width=128"]
    assert [c.best for c in column(page, "comparison", "BPC")] == [False, True]
    assert page.headers["config-diff"] == ["Run", "model.width"]


def test_compare_shows_only_the_differences(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = sweep / "depth=1,seed=0", sweep / "depth=2,seed=1"
    code, out, _ = run_cli(capsys, "compare", str(a), str(b))
    assert code == 0
    config, metrics = out.split("test metrics")
    rows = [line.split() for line in config.splitlines()[4:] if line.strip()]
    assert rows[0] == ["key", a.name, b.name]
    assert rows[1:] == [["seed", "0", "1"], ["model.depth", "1", "2"]]
    ra, rb = _results(a)["test"], _results(b)["test"]
    for m in METRICS:
        assert f"{HEAD[m]} {fmt(m, ra[m])} {fmt(m, rb[m])}" in " ".join(metrics.split())
    code, out, _ = run_cli(capsys, "compare", str(a), str(a))
    assert code == 0 and "config: identical" in out


@pytest.mark.parametrize("flag", [[], ["--markdown"]])
def test_out_md_writes_the_markdown_there_and_nothing_else(sweep: Path, capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path, flag: list[str]) -> None:
    # The reference: the Markdown that --markdown writes beside an HTML report in the same folder.
    assert run_cli(capsys, "report", str(sweep), "--out", str(tmp_path / "ref" / "r.html"), "--markdown")[0] == 0
    out = tmp_path / "ref" / "only.md"
    code, printed, err = run_cli(capsys, "report", str(sweep), "--out", str(out), *flag)
    assert code == 0 and printed.split() == [str(out)], err
    assert out.read_text() == (tmp_path / "ref" / "r.md").read_text()
    assert sorted(p.name for p in (tmp_path / "ref").iterdir()) == ["only.md", "r.html", "r.md"]  # no only.html
    assert run_cli(capsys, "report", str(sweep), "--out", str(tmp_path / "R.MD"))[0] == 0  # any case of the suffix
    assert (tmp_path / "R.MD").read_text().startswith("# ")


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, sweep: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not a run")
    one_line_error(capsys, ["report", str(junk)], str(junk), "neither a run folder")
    one_line_error(capsys, ["report", str(tmp_path / "missing")], "is not a folder")
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(sweep / "depth=1,seed=0" / "config.yaml", half / "config.yaml")
    one_line_error(capsys, ["report", str(half)], "incomplete", "resume")
    one_line_error(capsys, ["report", str(sweep), "--out", str(tmp_path / "r.txt")], ".html", ".md")
    one_line_error(capsys, ["report", str(sweep), "--out", str(tmp_path / "r.txt"), "--markdown"], ".html", ".md")
    one_line_error(capsys, ["compare", str(junk), str(half)], "not a run folder")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["config.yaml", "half", "junk", "notes.txt"]
