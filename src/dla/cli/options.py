"""Options several commands share, so their help text is written once."""

from __future__ import annotations

import argparse

# `add_subparsers()`'s return type; argparse names it privately.
Subparsers = argparse._SubParsersAction


def add_data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help="dataset folder (default: $DLA_DATA, else ./data)")


def add_out_and_data_root(p: argparse.ArgumentParser) -> None:
    """The commands that write runs: where to (--out) and where the datasets are (--data-root)."""
    p.add_argument("--out", default="runs", help="folder that holds <experiment>/<run>/ (default: runs)")
    add_data_root(p)


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
