"""The `dla` command line. It parses arguments and calls the library; the lab logic lives elsewhere.

Each command is a module of this package with `add_parser(subparsers)`, which registers the command's arguments
and its handler (`set_defaults(func=...)`); a new command is one module and one line in `COMMAND_MODULES`. The
modules import only the standard library at top level: the library (torch, matplotlib, ...) is imported inside
the handlers, so `dla --help` and a mistyped option answer at once.

A user mistake (`DlaError`) is printed on one line and exits 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from dla.cli import attack, catalogue, config, explain, generate, lab, ood, results, run, tokenize
from dla.errors import DlaError

# In the order `dla --help` lists the commands.
COMMAND_MODULES = (catalogue, run, results, lab, explain, attack, ood, generate, config, tokenize)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise DlaError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dla", description="Deep Learning Applications labs as reproducible experiments.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in COMMAND_MODULES:
        module.add_parser(sub)
    return parser


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # torchrun and schedulers stop processes with SIGTERM; raising lets `finally` blocks and atomic writes
    # clean up instead of dying mid-write.
    raise SystemExit(128 + signum)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    # Overrides may come after options too (`dla run x --out d a=1`): collect the stray key=value words.
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    ok, code = False, None
    try:
        args = _parse(argv)
        code = args.func(args)  # None = success; `dla docs --check` returns 1 for "out of date"
        ok = True
    except DlaError as exc:
        print(f"dla: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside the training loop (which saves and explains how to resume)
        print("dla: interrupted", file=sys.stderr)
        return 130
    finally:
        if "torch.distributed" in sys.modules:  # joined by a torchrun launch; cheap to check otherwise
            from dla.distributed import shutdown

            shutdown(ok)
    return code or 0
