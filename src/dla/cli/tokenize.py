"""`dla tokenize`: a text's Hugging Face tokens and ids, and whether decoding them gives the text back."""

from __future__ import annotations

import argparse

from dla.cli.options import Subparsers, add_data_root
from dla.errors import DlaError


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("tokenize", help="a text's tokens and ids (Hugging Face tokenizer), words vs tokens, and the "
                                        "decoded round trip")
    p.add_argument("text")
    p.add_argument("--tokenizer", default="gpt2", help="hub id or local folder (default: gpt2; offline the data "
                                                       "root's gpt2_tokenizer/)")
    add_data_root(p)
    p.set_defaults(func=cmd_tokenize)


def cmd_tokenize(args: argparse.Namespace) -> None:
    from dla.data import resolve_data_root
    from dla.text.hf import format_tokenized, tokenize_text

    result = tokenize_text(args.text, args.tokenizer, resolve_data_root(args.data_root))
    print(format_tokenized(result, args.tokenizer), end="")
    if not result.round_trip:
        raise DlaError(f"round trip differs: decoding the ids gives {result.decoded!r}, not the input "
                       f"{result.text!r} (tokenizer {args.tokenizer} normalises text, e.g. lower-cases it)")
