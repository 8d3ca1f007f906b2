"""The commands that read finished runs: `dla report` (HTML / Markdown), `dla compare` (two runs), `dla show`
(a summary table)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dla.cli.options import Subparsers
from dla.errors import RunDirError


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("report", help="one self-contained HTML file (tables, curves, plots) for a run, several "
                                      "runs or a sweep; --out X.md or --markdown for the same tables as Markdown")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_OR_SWEEP_DIR",
                   help="run folders, sweep folders, or folders of runs (several: compared, seeds pooled)")
    p.add_argument("--out", default=None, help="the report file; its suffix picks the format: .html (HTML) or .md "
                                               "(Markdown only) (default: DIR/report.html for one folder, else "
                                               "./report.html)")
    p.add_argument("--markdown", action="store_true", help="with an HTML report, also write the same tables as "
                                                           "Markdown beside it (.md); with --out X.md, Markdown is "
                                                           "all there is")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="two runs side by side: the config keys that differ, and their test metrics")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("show", help="print a run's or a sweep's summary table")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_show)


def cmd_report(args: argparse.Namespace) -> None:
    from dla.report.html import write_report

    for path in write_report([Path(p) for p in args.run_dirs], Path(args.out) if args.out else None, args.markdown):
        print(path)


def cmd_compare(args: argparse.Namespace) -> None:
    from dla.compare import compare_runs

    print(compare_runs(Path(args.run_a), Path(args.run_b)), end="")


def cmd_show(args: argparse.Namespace) -> None:
    from dla.runs import RunDir

    path = Path(args.run_dir)
    if not path.is_dir():
        raise RunDirError(f"{path} is not a folder; pass a run or sweep folder such as runs/mnist_mlp/<run>")
    summary = path / "summary.md"
    if not summary.is_file():
        RunDir(path).read_results()  # raises the 'incomplete run' message when that is the reason
        raise RunDirError(f"{path} has no summary.md; is it a run or sweep folder written by dla?")
    print(summary.read_text(), end="")
