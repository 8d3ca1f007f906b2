"""The labs as a whole: `dla lab N` (every step on a budget, one report), `dla verdicts` (sweeps against the lab
reports' published numbers), `dla docs` (refresh the lab documents' tables)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dla.cli.options import Subparsers, add_out_and_data_root


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("lab", help="a whole lab in order (train, attack, OOD, ...) on a budget, resumable, into one "
                                   "HTML report with the verdicts against the lab reports")
    p.add_argument("lab", type=int, help="the lab's number (1, 2, 3)")
    p.add_argument("--budget", default="smoke",
                   help="smoke (minutes: a test of the pipeline), cpu (a few CPU hours) or full (the labs' sizes, "
                        "for a GPU); each lab's file src/dla/labs/labN.yaml lists its profiles (default: smoke)")
    add_out_and_data_root(p)
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser("verdicts", help="every sweep's numbers against the lab reports' published ones: matched, "
                                        "beaten, below or not comparable, with the rule")
    p.add_argument("paths", nargs="*", default=["runs"],
                   help="sweep folders, or folders holding them (e.g. runs, runs/cnn_cifar10) (default: runs)")
    p.set_defaults(func=cmd_verdicts)

    p = sub.add_parser("docs", help="refresh the tables of Markdown documents (docs/labs/*.md) from the run "
                                    "folders they quote (<!-- dla:table PATH [N] --> markers)")
    p.add_argument("files", nargs="+", help="Markdown documents to refresh in place")
    p.add_argument("--runs", default="runs", help="the folder the markers' paths are relative to (default: runs)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when a document is out of date")
    p.add_argument("--keep-missing", action="store_true",
                   help="leave a block whose run folder is not under --runs as it is (runs measured elsewhere) "
                        "instead of stopping; the blocks kept are listed")
    p.set_defaults(func=cmd_docs)


def cmd_lab(args: argparse.Namespace) -> None:
    from dla.labs import run_lab

    report = run_lab(args.lab, args.budget, Path(args.out), args.data_root)
    print(f"lab report: {report}")


def cmd_verdicts(args: argparse.Namespace) -> None:
    from dla.report.verdict import verdicts_text

    print(verdicts_text([Path(p) for p in args.paths]), end="")


def cmd_docs(args: argparse.Namespace) -> int:
    from dla.report.docs import refresh

    kept: list[str] | None = [] if args.keep_missing else None
    changed = refresh([Path(f) for f in args.files], Path(args.runs), check=args.check, kept=kept)
    for where in kept or []:
        print(f"kept as it is (its runs are not under {args.runs}): {where}")
    for path in changed:
        print(f"{'out of date' if args.check else 'refreshed'}: {path}")
    if not changed:
        print(f"up to date: {len(args.files)} document(s)")
    return 1 if args.check and changed else 0
