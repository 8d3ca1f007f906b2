"""`dla report`: one self-contained HTML file (and, on request, the same tables as Markdown) for a run, several
runs, or a sweep.

The report is first built as a list of sections of plain blocks (tables, images, text), then rendered twice: as
HTML, where images are base64 PNG data URIs and the only script is a few inline lines that sort tables (no
network fetch; it works from a file:// URL), and as Markdown, where the same tables come out as Markdown and
images that exist as files are linked by relative path. One model, two renderers: the Markdown that README
sections are pasted from cannot drift from the HTML people look at.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dla.errors import RunDirError
from dla.io import atomic_write
from dla.report.collect import Collection, Run, collect, config_differences
from dla.report.tables import (
    LOWER_IS_BETTER,
    best_index,
    fmt,
    fmt_mean_std,
    group_values,
    header,
    md_cell,
    md_text,
    mean_std,
    metric_columns,
    numeric_metrics,
)

# ---------------------------------------------------------------------------------------------------------------
# The document model


@dataclass
class Cell:
    text: str
    value: float | None = None  # the raw number behind `text` (sorting, tests)
    best: bool = False
    std: float | None = None


@dataclass
class Table:
    id: str
    header: list[str]
    rows: list[list[Cell]]
    caption: str = ""


@dataclass
class Image:
    caption: str
    png: bytes
    path: Path | None = None  # the file it came from (Markdown links it); None for figures drawn for the report
    wide: bool = False  # image grids: shown at full size, not capped in height like plots


@dataclass
class Text:
    text: str
    pre: bool = False  # preformatted (config, generated samples)


@dataclass
class Section:
    title: str
    id: str
    blocks: list[Any] = field(default_factory=list)
    collapsed: bool = False  # HTML: inside <details>; Markdown: as usual


@dataclass
class Report:
    title: str
    sections: list[Section]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _image(path: Path, caption: str = "", wide: bool = False) -> Image:
    return Image(caption or path.stem.replace("_", " "), path.read_bytes(), path, wide)


def _figure_png(fig: Any) -> bytes:
    from dla.report.plots import plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def markdown_blocks(text: str) -> list[Any]:
    """A table.md/summary.md written by dla -> blocks: its Markdown tables as Tables, other lines as Text."""
    blocks: list[Any] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            body = [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
            blocks.append(Table("", rows[0], [[Cell(c.replace("**", ""), best=c.startswith("**")) for c in r]
                                              for r in body]))
            continue
        if line:
            blocks.append(Text(line.lstrip("#").strip()))
        i += 1
    return blocks


# ---------------------------------------------------------------------------------------------------------------
# Sections of one run


def _scalars(results: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in results.items() if (isinstance(v, str | int | float | bool) and not isinstance(v, bool))
            or isinstance(v, bool)}


NOT_SPLITS = {"data", "machine"}


def results_table(run: Run) -> Table:
    """One row per split section of results.json (val, test, ...) holding numbers; a column per metric."""
    # "data" and "machine" are provenance (sizes, limits; where it ran), not a split's metrics.
    splits = [k for k, v in run.results.items() if isinstance(v, dict) and numeric_metrics(v) and k not in NOT_SPLITS]
    splits.sort(key=lambda s: ({"train": 0, "val": 1, "test": 2}.get(s, 3), s))
    sections = [numeric_metrics(run.results[s]) for s in splits]
    metrics = metric_columns(sections)
    rows = [[Cell(s), *(Cell(fmt(m, r[m]), r[m]) if m in r else Cell("") for m in metrics)]
            for s, r in zip(splits, sections, strict=True)]
    return Table("results", ["Split", *(header(m) for m in metrics)], rows,
                 "From results.json: the best checkpoint on each split.")


def curves_png(rows: Sequence[dict[str, Any]], title: str) -> bytes | None:
    """train vs val per epoch, one panel per metric metrics.csv has values for (loss first)."""
    from dla.report.plots import _series, plt

    skip = {"epoch", "split", "lr", "time"}
    metrics = [m for m in metric_columns([{k: v for k, v in r.items() if k not in skip} for r in rows])]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for split, style in (("train", "-"), ("val", "--")):
            x, y = _series(rows, split, metric)
            if x:
                ax.plot(x, y, style, marker="o", ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_title(header(metric), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _figure_png(fig)


def _extras(path: Path) -> list[Section]:
    """What `dla explain`, `dla attack`, `dla ood` and text generation wrote into a run folder."""
    out: list[Section] = []
    samples = path / "samples.txt"
    if samples.is_file():
        out.append(Section("Generated text", "samples", [Text(samples.read_text(errors="replace"), pre=True)]))
    explain = sorted((path / "explain").glob("*.png"))
    if explain:
        out.append(Section("Explanations", "explain", [_image(p, wide=True) for p in explain]))
    for folder in sorted(p for p in (path / "attacks").glob("*") if p.is_dir()):
        blocks: list[Any] = []
        for name in ("table.md", "summary.md"):
            if (folder / name).is_file():
                blocks += markdown_blocks((folder / name).read_text())
        blocks += [_image(folder / n, wide=n == "grid.png") for n in ("accuracy_vs_eps.png", "grid.png")
                   if (folder / n).is_file()]
        if blocks:
            out.append(Section(f"Attack: {folder.name}", f"attack-{_slug(folder.name)}", blocks))
    ood = path / "ood"
    if (ood / "table.md").is_file():
        blocks = [*markdown_blocks((ood / "table.md").read_text())]
        if (ood / "confusion_id.png").is_file():
            blocks.append(_image(ood / "confusion_id.png", "ID test confusion"))
        blocks += [_image(p) for p in sorted(ood.glob("*.png")) if p.name != "confusion_id.png"]  # e.g. a tuning grid
        more: list[Any] = []
        for sub in sorted(p for p in ood.glob("*") if p.is_dir()):
            blocks += [_image(sub / n, f"{sub.name}: {n[:-4]}") for n in ("roc.png", "pr.png", "confusion_ood.png")
                       if (sub / n).is_file()]
            more += [_image(p, f"{sub.name}: {p.stem}") for p in sorted(sub.glob("*.png"))
                     if p.name not in ("roc.png", "pr.png", "confusion_ood.png")]
        out.append(Section("Out-of-distribution detection", "ood", blocks))
        if more:
            out.append(Section("OOD score distributions", "ood-scores", more, collapsed=True))
    return out


def run_report(run: Run) -> Report:
    res = run.results
    title = f"{res.get('experiment') or run.config.get('experiment', '')} / {run.name}"
    info = _scalars(res)
    overview = Table("run", ["Field", "Value"], [[Cell(k), Cell(str(v), v if isinstance(v, int | float)
                                                                    and not isinstance(v, bool) else None)]
                                                 for k, v in info.items()])
    sections = [Section("Results", "results-section", [results_table(run)]),
                Section("Run", "run-section", [overview])]
    plots: list[Any] = []
    if (run.path / "plots" / "curves.png").is_file():
        plots.append(_image(run.path / "plots" / "curves.png", "training curves"))
    elif run.metrics and (png := curves_png(run.metrics, title)):
        plots.append(Image("training curves", png))
    if (run.path / "plots" / "confusion_test.png").is_file():
        plots.append(_image(run.path / "plots" / "confusion_test.png", "test confusion matrix"))
    elif res.get("confusion_matrix") and res.get("classes"):
        from dla.report.plots import plot_confusion

        with tempfile.TemporaryDirectory() as tmp:
            plot_confusion(res["confusion_matrix"], res["classes"], Path(tmp) / "c.png", "test confusion")
            plots.append(Image("test confusion matrix", (Path(tmp) / "c.png").read_bytes()))
    plots += [_image(p) for p in sorted((run.path / "plots").glob("*.png"))
              if p.name not in ("curves.png", "confusion_test.png")]
    if plots:
        sections.append(Section("Training curves and plots", "plots", plots))
    sections += _extras(run.path)
    sections.append(Section("Resolved config", "config", [Text(run.config_text, pre=True)]))
    return Report(title, sections)


# ---------------------------------------------------------------------------------------------------------------
# Several runs / a sweep


def comparison_table(groups: Sequence[tuple[str, Sequence[Run]]]) -> Table:
    """Mean ± sample std over each group's runs (seeds) of every test metric; the best mean of a column marked."""
    results = [[r.test for r in rs] for _, rs in groups]
    metrics = metric_columns([t for ts in results for t in ts])
    cols: list[list[Cell]] = []
    for m in metrics:
        vals = [group_values(ts, m) for ts in results]
        stats = [mean_std(v) if v else None for v in vals]
        best = best_index(m, [s[0] if s else None for s in stats]) if len(groups) > 1 else None
        cols.append([Cell(fmt_mean_std(m, v), s[0], i == best, s[1]) if s else Cell("")
                     for i, (v, s) in enumerate(zip(vals, stats, strict=True))])
    rows = [[Cell(label), *(c[i] for c in cols), Cell(str(len(rs)), len(rs))]
            for i, (label, rs) in enumerate(groups)]
    lower = sorted(LOWER_IS_BETTER & set(metrics))
    return Table("comparison", ["Config", *(header(m) for m in metrics), "n"], rows,
                 "Test set, best checkpoint of each run: mean ± std (sample std) over the runs of each config; "
                 "best mean per column in bold (" + (f"lowest for {', '.join(lower)}; " if lower else "")
                 + "highest otherwise).")


def runs_table(runs: Sequence[Run]) -> Table:
    metrics = metric_columns([r.test for r in runs])
    rows = [[Cell(r.name), *(Cell(fmt(m, r.test[m]), r.test[m]) if m in r.test else Cell("") for m in metrics)]
            for r in runs]
    return Table("runs", ["Run", *(header(m) for m in metrics)], rows, "Test set, one row per run (results.json).")


def config_diff_table(runs: Sequence[Run]) -> Table | None:
    diffs = config_differences(runs)
    if not diffs:
        return None
    return Table("config-diff", ["Run", *(k for k, _ in diffs)],
                 [[Cell(r.name), *(Cell(vals[i]) for _, vals in diffs)] for i, r in enumerate(runs)],
                 "Only the config keys whose values differ between the runs.")


def overlay_images(groups: Sequence[tuple[str, Sequence[Run]]]) -> list[Image]:
    """Curves of every group on one axis (mean over its seeds, band = ± std)."""
    from dla.report.plots import plot_overlay

    rows = [r for _, rs in groups for run in rs for r in run.metrics]
    have = {(r["split"], k) for r in rows for k, v in r.items() if v is not None}
    wanted = [("val", "accuracy"), ("val", "bpc"), ("val", "loss"), ("train", "loss")]
    images = []
    with tempfile.TemporaryDirectory() as tmp:
        for split, metric in wanted:
            if (split, metric) not in have:
                continue
            path = Path(tmp) / f"{split}_{metric}.png"
            plot_overlay([(label, [run.metrics for run in rs]) for label, rs in groups], split, metric, path,
                         f"{split} {metric}")
            images.append(Image(f"{split} {metric} per epoch (mean ± std over seeds)", path.read_bytes()))
    return images


def collection_report(col: Collection) -> Report:
    if col.sweep is not None:
        title = f"Sweep {col.sweep.parent.name} / {col.sweep.name}"
        intro = (f"{len(col.runs)} finished runs in {len(col.groups)} configs."
                 + (f" Not finished: {', '.join(col.unfinished)}." if col.unfinished else ""))
    else:
        experiments = sorted({str(r.results.get("experiment", "")) for r in col.runs})
        title = f"{len(col.runs)} runs: {', '.join(experiments)}"
        intro = f"{len(col.runs)} runs in {len(col.groups)} configs (runs whose configs differ only by seed pooled)."
    sections = [Section("Comparison", "comparison-section", [Text(intro), comparison_table(col.groups)]),
                Section("Runs", "runs-section", [runs_table(col.runs)])]
    diff = config_diff_table(col.runs)
    if diff is not None:
        sections.append(Section("Config differences", "config-diff-section", [diff]))
    # A sweep drew its overlays already (files the Markdown can link); other collections get them drawn here.
    own = sorted((col.sweep / "plots").glob("*.png"), key=lambda p: (not p.name.startswith("val_"), p.name)) \
        if col.sweep is not None else []
    images = [_image(p) for p in own] if own else overlay_images(col.groups)
    if images:
        sections.append(Section("Curves", "curves", images))
    if col.sweep is not None:
        for folder in sorted(p for p in (col.sweep / "attacks").glob("*") if p.is_dir()):
            blocks: list[Any] = []
            if (folder / "summary.md").is_file():
                blocks += markdown_blocks((folder / "summary.md").read_text())
            if (folder / "accuracy_vs_eps.png").is_file():
                blocks.append(_image(folder / "accuracy_vs_eps.png"))
            if blocks:
                sections.append(Section(f"Attack: {folder.name}", f"attack-{_slug(folder.name)}", blocks))
    return Report(title, sections)


# ---------------------------------------------------------------------------------------------------------------
# Rendering

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:1em 2em;color:#1d1d1f;background:#fff}
h1{font-size:1.6em;margin:.3em 0}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}th{background:#f4f4f6}table.sortable th{cursor:pointer}
td:first-child,th:first-child{text-align:left}caption{caption-side:bottom;text-align:left;color:#666;
font-size:.9em;padding-top:.3em}
td.best{font-weight:bold;background:#e8f5e9}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figure img{max-width:100%;max-height:520px;border:1px solid #eee}figure.wide img{max-height:none}
figcaption{color:#555;font-size:.9em}
pre{background:#f7f7f9;border:1px solid #e5e5e5;padding:.7em;overflow:auto;max-height:32em;
white-space:pre-wrap}
nav a{margin-right:1em}footer{color:#888;font-size:.85em;margin-top:2em}
"""

# Sorting by a click on a column header: the only script, inline, no dependencies.
_JS = """
document.querySelectorAll("table").forEach(function (table) {
  table.classList.add("sortable");
  var heads = table.tHead ? table.tHead.rows[0].cells : [];
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var dir = th.getAttribute("data-dir") === "asc" ? -1 : 1;
      th.setAttribute("data-dir", dir === 1 ? "asc" : "desc");
      function key(row) {
        var cell = row.cells[col], v = cell ? cell.getAttribute("data-value") : null;
        return v !== null && v !== "" ? parseFloat(v) : (cell ? cell.textContent : "");
      }
      rows.sort(function (a, b) { var x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : 0) * dir; });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _html_block(block: Any) -> str:
    e = html.escape
    if isinstance(block, Table):
        head = "".join(f"<th>{e(h)}</th>" for h in block.header)
        body = []
        for row in block.rows:
            cells = []
            for c in row:
                attrs = ' class="best"' if c.best else ""
                if c.value is not None:
                    attrs += f' data-value="{c.value!r}"'
                if c.std is not None:
                    attrs += f' data-std="{c.std!r}"'
                cells.append(f"<td{attrs}>{e(c.text)}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        ident = f' id="{e(block.id)}"' if block.id else ""
        caption = f"<caption>{e(block.caption)}</caption>" if block.caption else ""
        return (f"<table{ident}>{caption}<thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body)
                + "\n</tbody></table>")
    if isinstance(block, Image):
        data = base64.b64encode(block.png).decode("ascii")
        wide = ' class="wide"' if block.wide else ""
        return (f'<figure{wide}><img alt="{e(block.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{e(block.caption)}</figcaption></figure>")
    if isinstance(block, Text):
        return f"<pre>{e(block.text)}</pre>" if block.pre else f"<p>{e(block.text)}</p>"
    raise TypeError(f"unknown report block {block!r}")


def render_html(report: Report) -> str:
    e = html.escape
    nav = " ".join(f'<a href="#{e(s.id)}">{e(s.title)}</a>' for s in report.sections)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{e(report.title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{e(report.title)}</h1>", f"<nav>{nav}</nav>"]
    for s in report.sections:
        inner = "\n".join(_html_block(b) for b in s.blocks)
        if s.collapsed:
            parts.append(f'<section id="{e(s.id)}"><details><summary><h2 style="display:inline">{e(s.title)}'
                         f"</h2></summary>\n{inner}\n</details></section>")
        else:
            parts.append(f'<section id="{e(s.id)}"><h2>{e(s.title)}</h2>\n{inner}\n</section>')
    from dla import __version__

    parts += [f"<footer>written by dla {e(__version__)} (`dla report`)</footer>", f"<script>{_JS}</script>",
              "</body></html>"]
    return "\n".join(parts) + "\n"


def _md_fence(text: str) -> str:
    """A code fence longer than any backtick run in `text`, so the text cannot close it early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(report: Report, out: Path) -> str:
    """The same sections as Markdown: tables as tables (best in bold), file images linked relative to `out`."""
    lines = [f"# {md_cell(report.title)}", ""]
    for s in report.sections:
        blocks = [b for b in s.blocks if not (isinstance(b, Image) and b.path is None)]
        if not blocks:  # only figures drawn for the HTML: nothing to link
            continue
        lines += [f"## {md_cell(s.title)}", ""]
        for b in blocks:
            if isinstance(b, Table):
                lines.append("| " + " | ".join(md_cell(h) for h in b.header) + " |")
                lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(b.header))) + "|")
                for row in b.rows:
                    lines.append("| " + " | ".join(f"**{md_cell(c.text)}**" if c.best else md_cell(c.text)
                                                   for c in row) + " |")
                if b.caption:
                    lines += ["", md_text(b.caption)]
            elif isinstance(b, Image):
                rel = os.path.relpath(b.path.resolve(), out.parent.resolve())
                alt = md_cell(b.caption).replace("[", "\\[").replace("]", "\\]")
                lines.append(f"![{alt}]({Path(rel).as_posix()})")
            elif isinstance(b, Text):
                fence = _md_fence(b.text)
                lines += [fence, b.text.rstrip("\n"), fence] if b.pre else [md_text(b.text)]
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Entry point


def build_report(paths: Sequence[Path]) -> Report:
    col = collect([Path(p) for p in paths])
    return run_report(col.single) if col.single is not None else collection_report(col)


def default_output(paths: Sequence[Path]) -> Path:
    """<dir>/report.html for one folder; ./report.html for several."""
    return Path(paths[0]) / "report.html" if len(paths) == 1 else Path("report.html")


def output_format(out: Path) -> str:
    """'html' or 'markdown': the suffix of --out decides, so `--out X.md` is Markdown and `--out X.html` HTML."""
    suffix = out.suffix.lower()
    if suffix in (".html", ".htm"):
        return "html"
    if suffix in (".md", ".markdown"):
        return "markdown"
    raise RunDirError(f"--out {out} should end in .html (the HTML report) or .md (the same tables as Markdown)")


def write_report(paths: Sequence[Path], out: Path | None = None, markdown: bool = False) -> list[Path]:
    """Check `out`, read every folder (a bad one fails with one line and nothing written), then write the
    report atomically: HTML or Markdown as the suffix of `out` says; with `markdown`, an HTML report also gets
    the Markdown beside it (.md). Returns the files written."""
    paths = [Path(p) for p in paths]
    out = Path(out) if out is not None else default_output(paths)
    kind = output_format(out)
    if out.is_dir():
        raise RunDirError(f"--out {out} is a folder; give a file name such as {out / 'report.html'}")
    report = build_report(paths)
    targets = [out]
    if kind == "html" and markdown:
        targets.append(out.with_suffix(".md"))
    for target in targets:
        text = render_html(report) if output_format(target) == "html" else render_markdown(report, target)
        try:
            with atomic_write(target, "w") as f:
                f.write(text)
        except OSError as exc:  # a read-only or special folder (/proc), a full disk: atomic, so nothing half-written
            raise RunDirError(f"cannot write the report {target}: {exc.strerror or exc}; pass --out a file in a "
                              "writable folder") from None
    return targets
