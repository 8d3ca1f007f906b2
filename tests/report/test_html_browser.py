"""The report in a real headless browser (Debian's chromium, installed by .ci/run): it loads from a file:// URL
with no console message, its script runs, the rendered results table holds results.json's numbers, and a
screenshot is taken."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from dla.report.html import write_report
from dla.report.tables import fmt

from ..conftest import QUICK, needs_mnist, png_size, train_run
from .pages import read_page

BROWSER = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = [needs_mnist, pytest.mark.skipif(BROWSER is None, reason="no chromium binary on PATH; install it "
                                              "with `apt-get install chromium` (.ci/run does)")]


def _chromium(page: Path, *flags: str, cwd: Path) -> tuple[str, list[str]]:
    """(stdout, console lines) of headless chromium on `page`; every console message is logged to stderr."""
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--enable-logging=stderr", "--v=0", f"--user-data-dir={cwd / 'profile'}", *flags, page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def test_report_in_headless_chromium(tmp_path: Path) -> None:
    # The check can fail: a page with a script error does show up in the console lines.
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>")
    assert any("undefinedFunction" in line for line in _chromium(bad, "--dump-dom", cwd=tmp_path)[1])

    run = train_run(tmp_path, "mnist_mlp", [*QUICK, "train.epochs=1", "tracking.tensorboard=false"]).path
    (report,) = write_report([run])
    dom, console = _chromium(report, "--dump-dom", cwd=tmp_path)
    assert console == []
    page = read_page(dom)
    assert "sortable" in dom  # the inline script ran
    results = json.loads((run / "results.json").read_text())
    metrics = ["loss", "accuracy", "precision", "recall", "f1"]
    rendered = {row[0].text: [(c.text, float(c.value)) for c in row[1:]] for row in page.tables["results"]}
    assert rendered == {split: [(fmt(m, results[split][m]), results[split][m]) for m in metrics]
                        for split in ("train", "val", "test")}

    shot = tmp_path / "shot.png"
    _, console = _chromium(report, f"--screenshot={shot}", "--window-size=1200,900", "--hide-scrollbars",
                           cwd=tmp_path)
    assert console == [] and png_size(shot) == (1200, 900)
