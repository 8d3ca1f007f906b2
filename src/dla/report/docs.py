"""`dla docs FILE.md ... --runs DIR`: refresh the tables of Markdown documents from the run folders they quote.

A document marks each generated table with a pair of comments; what lies between them is replaced:

    <!-- dla:table cnn_cifar10/s3/ood/summary.md 2 -->
    | ... |
    <!-- /dla:table -->

The first word is a Markdown file that `dla` wrote (a sweep's summary.md, an attack's or OOD run's table.md),
relative to `--runs`; the optional number picks its N-th table (default 1), and a last word `caption` brings the
paragraph that precedes the table in that file too (a summary's caption: its data, budget and machine), so the
document's caption can never drift from the run it quotes. `dla:verdicts SWEEP...` instead
inserts `dla verdicts`' table for those sweep folders. So after a rerun, one command brings every quoted
number up to date, and a test can check that the documents regenerate identically.

Every marker is resolved before any file is written, and each file is replaced whole (a temp file renamed over
it): a missing source, a path outside `--runs` or an unclosed marker is one line and leaves every file as it was.
With `--keep-missing` a block whose run folders are not under `--runs` (measured elsewhere, not rerun here)
keeps its table as it is and is named on the output; every other error still stops the command.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dla.errors import DlaError

MAX_BYTES = 4 << 20  # a document or a quoted file larger than this is not one dla wrote
_OPEN = re.compile(r"^<!-- dla:(table|verdicts)((?: [^>]*?)?) -->$")
_CLOSE = "<!-- /dla:{kind} -->"


class DocsError(DlaError):
    """A document or a marker `dla docs` cannot resolve."""


class MissingSource(DocsError):
    """A marker's run folder or quoted file does not exist under --runs."""


@dataclass(frozen=True)
class Marker:
    kind: str  # "table" or "verdicts"
    args: tuple[str, ...]
    line: int  # 1-based line of the opening comment


def _read(path: Path, what: str) -> str:
    if not path.exists():
        raise MissingSource(f"{what} {path} does not exist; run the command that writes it, or fix the marker")
    try:
        if path.stat().st_size > MAX_BYTES:
            raise DocsError(f"{what} {path} is larger than {MAX_BYTES >> 20} MiB; it is not a file dla wrote")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DocsError(f"{what} {path} cannot be read ({e.__class__.__name__}); run the command that writes it, "
                        "or fix the marker") from None


def _inside(runs: Path, rel: str, where: str) -> Path:
    """runs / rel, refused when it leaves `runs` (an absolute path, '..', a symlink out)."""
    path = (runs / rel).resolve()
    if not path.is_relative_to(runs.resolve()):
        raise DocsError(f"{where}: {rel!r} is outside --runs {runs}; give a path relative to it")
    return path


def tables(text: str) -> list[str]:
    """The Markdown tables of text, in order: runs of lines that start with '|', each ending in a newline."""
    return [table for _, table in captioned_tables(text)]


def captioned_tables(text: str) -> list[tuple[str, str]]:
    """(caption, table) for each Markdown table of text. The caption is the paragraph just before the table, its
    lines joined and newline-terminated; where a heading comes right before, the heading's text (a sweep
    summary's "## variant=pgd: group means ..." names whose table it is); "" after another table."""
    out, block, para, last, caption = [], [], [], "", ""
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            if not block:
                caption = " ".join(para) or last
            block.append(line)
            continue
        if block:
            out.append((caption + "\n" if caption else "", "\n".join(block) + "\n"))
            block, para, last = [], [], ""
        if line.startswith("#"):
            para, last = [], line.lstrip("#").strip()
        elif line.strip():
            para.append(line.strip())
        elif para:
            last, para = " ".join(para), []
    return out


def _generate(marker: Marker, runs: Path, where: str) -> str:
    if marker.kind == "verdicts":
        from dla.report.verdict import verdicts_text

        if not marker.args:
            raise DocsError(f"{where}: dla:verdicts needs sweep folders, e.g. <!-- dla:verdicts cnn_cifar10/s3 -->")
        folders = [_inside(runs, a, where) for a in marker.args]
        absent = [a for a, f in zip(marker.args, folders, strict=True) if not f.is_dir()]
        if absent:
            raise MissingSource(f"{where}: sweep folder {absent[0]} does not exist under --runs {runs}")
        found = tables(verdicts_text(folders))
        if not found:
            raise DocsError(f"{where}: no verdicts for {' '.join(marker.args)}; are they finished sweeps?")
        return found[0]
    args = list(marker.args)
    with_caption = len(args) > 1 and args[-1] == "caption"
    if with_caption:
        args.pop()
    if not 1 <= len(args) <= 2 or (len(args) == 2 and not args[1].isdigit()):
        raise DocsError(f"{where}: write <!-- dla:table PATH [N] [caption] --> (PATH relative to --runs, N the "
                        f"table's number, 1 = the first); got {' '.join(marker.args)!r}")
    path = _inside(runs, args[0], where)
    n = int(args[1]) if len(args) == 2 else 1
    found = captioned_tables(_read(path, "quoted file"))
    if not 1 <= n <= len(found):
        raise DocsError(f"{where}: {args[0]} has {len(found)} table(s), not a table {n}")
    caption, table = found[n - 1]
    return f"{caption}\n{table}" if with_caption and caption else table


def render(text: str, runs: Path, name: str = "document", kept: list[str] | None = None) -> str:
    """text with every marked block replaced by its table from `runs`; DocsError names the first bad marker.
    With a `kept` list, a block whose source is missing stays as it is and its place is appended to `kept`."""
    lines, out, i = text.splitlines(keepends=True), [], 0
    while i < len(lines):
        m = _OPEN.match(lines[i].rstrip("\n"))
        out.append(lines[i])
        i += 1
        if not m:
            continue
        marker = Marker(m.group(1), tuple(m.group(2).split()), i)
        where = f"{name}:{marker.line}"
        close = _CLOSE.format(kind=marker.kind)
        end = next((j for j in range(i, len(lines)) if lines[j].rstrip("\n") == close), None)
        if end is None:
            raise DocsError(f"{where}: dla:{marker.kind} is not closed; add a line {close} after its table")
        try:
            out.append(_generate(marker, runs, where))
        except MissingSource:
            if kept is None:
                raise
            out.extend(lines[i:end])
            kept.append(where)
        out.append(lines[end])
        i = end + 1
    return "".join(out)


def refresh(paths: Sequence[Path], runs: Path, check: bool = False, kept: list[str] | None = None) -> list[Path]:
    """Render every document; write the changed ones (unless `check`). Returns the documents that changed.
    `kept`: see `render` (the blocks left as they were, for want of their sources)."""
    from dla.io import atomic_write

    if not runs.is_dir():
        raise DocsError(f"--runs {runs} is not a folder; point it at the folder holding the run folders")
    rendered = {}
    for path in paths:
        old = _read(path, "document")
        rendered[path] = (old, render(old, runs, str(path), kept))  # every marker resolved before anything is written
    changed = [p for p, (old, new) in rendered.items() if old != new]
    for path in [] if check else changed:
        with atomic_write(path, "w") as f:
            f.write(rendered[path][1])
    return changed
