"""`dla config`: an experiment's resolved config, or every key with its default and help; nothing is run."""

from __future__ import annotations

import argparse

from dla.cli.options import Subparsers
from dla.cli.run import teacher_shorthand


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("config", help="print the resolved config of an experiment (nothing is run)")
    p.add_argument("experiment")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--keys", action="store_true", help="list every key with its default and help")
    p.set_defaults(func=cmd_config)


def cmd_config(args: argparse.Namespace) -> None:
    from dla.config import ExperimentConfig, dump_yaml, help_lines, load_config
    from dla.models.registry import model_config_class

    cfg = load_config(args.experiment, teacher_shorthand(args.overrides))
    if not args.keys:
        print(dump_yaml(cfg), end="")
        return
    lines = help_lines(ExperimentConfig) + help_lines(model_config_class(cfg.model.name), "model.")
    for key, default, text in lines:
        print(f"{key:<34} {default!s:<14} {text}")
