"""`dla docs`: marked tables are replaced by the quoted files' tables, identically on a rerun; bad markers are one
line and write nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from dla.report.docs import DocsError, captioned_tables, refresh, render, tables

from ..conftest import run_cli as _cli

SUMMARY = "# sweep\n\nCaption.\n\n| a | b |\n|---|---:|\n| x | 1.00 |\n\nText.\n\n| c |\n|---|\n| 2 |\n"


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    (root / "exp" / "s3").mkdir(parents=True)
    (root / "exp" / "s3" / "summary.md").write_text(SUMMARY)
    return root


def _doc(tmp_path: Path, body: str) -> Path:
    doc = tmp_path / "lab.md"
    doc.write_text(body)
    return doc


def test_tables_are_the_runs_of_pipe_lines() -> None:
    assert tables(SUMMARY) == ["| a | b |\n|---|---:|\n| x | 1.00 |\n", "| c |\n|---|\n| 2 |\n"]


def test_each_table_has_the_paragraph_before_it_as_its_caption() -> None:
    text = ("# Title\n\nA caption\nover two lines.\n\n| a |\n|---|\n| 1 |\n| b |\n\n## Heading\n\n| c |\n"
            "Right above:\n| d |\n\n| e |\n")
    assert captioned_tables(text) == [("A caption over two lines.\n", "| a |\n|---|\n| 1 |\n| b |\n"),
                                      ("Heading\n", "| c |\n"), ("Right above:\n", "| d |\n"), ("", "| e |\n")]


def test_caption_brings_the_quoted_caption_with_the_table(runs: Path, tmp_path: Path) -> None:
    doc = _doc(tmp_path, "<!-- dla:table exp/s3/summary.md 2 caption -->\n<!-- /dla:table -->\n"
                         "<!-- dla:table exp/s3/summary.md caption -->\n<!-- /dla:table -->\n")
    refresh([doc], runs)
    assert doc.read_text() == ("<!-- dla:table exp/s3/summary.md 2 caption -->\nText.\n\n| c |\n|---|\n| 2 |\n"
                               "<!-- /dla:table -->\n<!-- dla:table exp/s3/summary.md caption -->\nCaption.\n\n"
                               "| a | b |\n|---|---:|\n| x | 1.00 |\n<!-- /dla:table -->\n")
    assert refresh([doc], runs) == []


def test_a_marked_block_gets_the_quoted_table_and_the_rest_is_kept(runs: Path, tmp_path: Path) -> None:
    doc = _doc(tmp_path, "# Lab\n\nintro\n<!-- dla:table exp/s3/summary.md 2 -->\n| stale |\n"
                         "<!-- /dla:table -->\nafter\n<!-- dla:table exp/s3/summary.md -->\n<!-- /dla:table -->\n")
    assert refresh([doc], runs) == [doc]
    assert doc.read_text() == ("# Lab\n\nintro\n<!-- dla:table exp/s3/summary.md 2 -->\n| c |\n|---|\n| 2 |\n"
                               "<!-- /dla:table -->\nafter\n<!-- dla:table exp/s3/summary.md -->\n"
                               "| a | b |\n|---|---:|\n| x | 1.00 |\n<!-- /dla:table -->\n")
    first = doc.read_text()
    assert refresh([doc], runs) == [] and doc.read_text() == first  # regenerates identically


def test_a_rerun_changes_the_numbers_and_check_says_so(runs: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    doc = _doc(tmp_path, "<!-- dla:table exp/s3/summary.md -->\n<!-- /dla:table -->\n")
    assert _cli(capsys, "docs", str(doc), "--runs", str(runs))[0] == 0
    (runs / "exp" / "s3" / "summary.md").write_text(SUMMARY.replace("1.00", "2.00"))
    before = doc.read_text()
    code, out, _ = _cli(capsys, "docs", str(doc), "--runs", str(runs), "--check")
    assert code == 1 and f"out of date: {doc}" in out and doc.read_text() == before
    code, out, _ = _cli(capsys, "docs", str(doc), "--runs", str(runs))
    assert code == 0 and "| x | 2.00 |" in doc.read_text()
    assert _cli(capsys, "docs", str(doc), "--runs", str(runs), "--check")[:2] == (0, "up to date: 1 document(s)\n")


@pytest.mark.parametrize(("body", "message"), [
    ("<!-- dla:table exp/s3/summary.md -->\n| a |\n", "lab.md:1: dla:table is not closed"),
    ("<!-- dla:table exp/s3/missing.md -->\n<!-- /dla:table -->\n", "quoted file .*missing.md does not exist"),
    ("<!-- dla:table ../../etc/passwd -->\n<!-- /dla:table -->\n", "is outside --runs"),
    ("<!-- dla:table /etc/passwd -->\n<!-- /dla:table -->\n", "is outside --runs"),
    ("<!-- dla:table exp/s3/summary.md 3 -->\n<!-- /dla:table -->\n", "has 2 table\\(s\\), not a table 3"),
    ("<!-- dla:table exp/s3/summary.md two -->\n<!-- /dla:table -->\n",
     "write <!-- dla:table PATH \\[N\\] \\[caption\\] -->"),
])
def test_bad_markers_are_one_line_and_no_file_is_written(runs: Path, tmp_path: Path, body: str,
                                                         message: str) -> None:
    good = tmp_path / "good.md"
    good.write_text("<!-- dla:table exp/s3/summary.md -->\n<!-- /dla:table -->\n")
    doc = _doc(tmp_path, body)
    with pytest.raises(DocsError, match=message):
        refresh([good, doc], runs)
    assert good.read_text() == "<!-- dla:table exp/s3/summary.md -->\n<!-- /dla:table -->\n"  # all or nothing
    assert doc.read_text() == body


def test_a_symlink_out_of_the_runs_folder_is_refused(runs: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.md"
    secret.write_text("| token |\n")
    (runs / "exp" / "link.md").symlink_to(secret)
    with pytest.raises(DocsError, match="is outside --runs"):
        render("<!-- dla:table exp/link.md -->\n<!-- /dla:table -->\n", runs)


def test_the_cli_error_is_one_line(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _doc(tmp_path, "<!-- dla:verdicts -->\n<!-- /dla:verdicts -->\n")
    code, _, err = _cli(capsys, "docs", str(doc), "--runs", str(runs))
    assert code == 2 and err.count("\n") == 1 and "dla:verdicts needs sweep folders" in err
    code, _, err = _cli(capsys, "docs", str(doc), "--runs", str(tmp_path / "nope"))
    assert code == 2 and "is not a folder" in err


def test_keep_missing_leaves_blocks_of_runs_measured_elsewhere_and_refreshes_the_rest(
        runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = ("<!-- dla:table old/s3/summary.md -->\n| measured elsewhere |\n<!-- /dla:table -->\n"
            "<!-- dla:verdicts old/s3 -->\n| verdicts elsewhere |\n<!-- /dla:verdicts -->\n"
            "<!-- dla:table exp/s3/summary.md -->\n| stale |\n<!-- /dla:table -->\n")
    doc = _doc(tmp_path, body)
    with pytest.raises(DocsError, match=r"old/s3/summary\.md does not exist"):
        refresh([doc], runs)  # by default a missing run is an error
    code, out, _ = _cli(capsys, "docs", str(doc), "--runs", str(runs), "--keep-missing")
    assert code == 0 and f"kept as it is (its runs are not under {runs}): {doc}:1" in out and f"{doc}:4" in out
    assert doc.read_text() == body.replace("| stale |\n", "| a | b |\n|---|---:|\n| x | 1.00 |\n")
    # Other errors still stop it: an unclosed marker writes nothing.
    bad = _doc(tmp_path, "<!-- dla:table old/s3/summary.md -->\n")
    with pytest.raises(DocsError, match="is not closed"):
        refresh([bad], runs, kept=[])
