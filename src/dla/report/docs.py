"""`dla docs FILE.md ... --runs DIR`: refresh the tables of Markdown documents from the run folders they quote.

A document marks each generated table with a pair of comments; what lies between them is replaced:

    <!-- dla:table cnn_cifar10/s3/ood/summary.md 2 -->
    | ... |
    <!-- /dla:table -->

The first word is a Markdown file that `dla` wrote (a sweep's summary.md, an attack's or OOD run's table.md),
relative to `--runs`; the optional number picks its N-th table (default 1). `dla:verdicts SWEEP...` instead
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
    out, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            out.append("\n".join(block) + "\n")
            block = []
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
    if not 1 <= len(marker.args) <= 2 or (len(marker.args) == 2 and not marker.args[1].isdigit()):
        raise DocsError(f"{where}: write <!-- dla:table PATH [N] --> (PATH relative to --runs, N the table's "
                        f"number, 1 = the first); got {' '.join(marker.args)!r}")
    path = _inside(runs, marker.args[0], where)
    n = int(marker.args[1]) if len(marker.args) == 2 else 1
    found = tables(_read(path, "quoted file"))
    if not 1 <= n <= len(found):
        raise DocsError(f"{where}: {marker.args[0]} has {len(found)} table(s), not a table {n}")
    return found[n - 1]


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
