"""`dla run` (one experiment) and `dla sweep` (a grid of runs over seeds)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dla.cli.options import Subparsers, add_out_and_data_root
from dla.errors import DlaError


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("run", help="train and test one experiment")
    p.add_argument("experiment", help="name from `dla list`, or a path to a .yaml file")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. optim.lr=0.01 train.epochs=5; a run "
                   "folder among them is the teacher to distil from (distill.teacher=FOLDER)")
    add_out_and_data_root(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sweep", help="a grid of runs with mean ± std over seeds")
    p.add_argument("experiment")
    p.add_argument("overrides", nargs="*", help="key=v1,v2 adds an axis; key=v fixes a value for every run")
    p.add_argument("--name", default="", help="sweep folder name; reuse it to continue an interrupted sweep")
    p.add_argument("--jobs", "-j", type=int, default=1,
                   help="points run at once, each in its own process (one GPU each when several are present; "
                        "default: 1, in this process)")
    p.add_argument("--launcher", choices=["local", "submitit"], default="local",
                   help="local: this machine (--jobs processes); submitit: one submitit job per point, on SLURM "
                        "where sbatch is found, else local processes (default: local)")
    p.add_argument("--submitit", action="append", default=[], metavar="KEY=VALUE",
                   help="a submitit executor parameter, repeatable: cluster=local, timeout_min=60, "
                        "slurm_partition=gpu, gpus_per_node=1, ...")
    add_out_and_data_root(p)
    p.set_defaults(func=cmd_sweep)


def cmd_run(args: argparse.Namespace) -> None:
    from dla.config import load_config
    from dla.data import resolve_data_root
    from dla.distributed import launched_main
    from dla.tasks import run_experiment

    cfg = load_config(args.experiment, teacher_shorthand(args.overrides))
    run = run_experiment(cfg, Path(args.out) / cfg.experiment, resolve_data_root(args.data_root))
    if not launched_main():
        return
    print()
    print(run.summary.read_text())
    print(f"run folder: {run.path}")


def teacher_shorthand(overrides: list[str]) -> list[str]:
    """`dla run distill TEACHER_RUN_DIR`: a run folder among the overrides means `distill.teacher=` that folder.

    Checked before the key=value parse because sweep run folders have '=' in their names (variant=teacher,seed=0).
    """
    from dla.errors import ConfigError

    folders = [o for o in overrides if _is_dir(o)]
    if len(folders) > 1:
        raise ConfigError(f"{len(folders)} run folders given ({', '.join(folders)}); name one teacher run")
    for folder in folders:
        if not (Path(folder) / "config.yaml").is_file():
            raise ConfigError(f"{folder} is a folder but not a run folder (no config.yaml); give the teacher's run "
                              "folder, as printed by `dla run`")
    return [f"distill.teacher={json.dumps(o)}" if o in folders else o for o in overrides]  # quoted: any path


def _is_dir(text: str) -> bool:
    try:
        return Path(text).is_dir()
    except (OSError, ValueError):  # a name too long for the filesystem, a NUL byte: an override, not a folder
        return False


def cmd_sweep(args: argparse.Namespace) -> None:
    from dla.data import resolve_data_root
    from dla.distributed import launched_main
    from dla.sweep import run_sweep

    if args.name:  # joined under --out: `--name ../x` or an absolute path must not write outside it
        from dla.config import check_folder_name

        check_folder_name("sweep --name", args.name)
    if args.submitit and args.launcher != "submitit":
        raise DlaError("--submitit KEY=VALUE sets submitit's executor: add --launcher submitit")
    launcher = None
    if args.launcher == "submitit":
        from dla.sweep_submitit import parse_options

        launcher = parse_options(args.submitit)
    sweep_dir = run_sweep(args.experiment, args.overrides, Path(args.out), resolve_data_root(args.data_root),
                          args.name, jobs=args.jobs, submitit=launcher)
    if not launched_main():
        return
    print()
    print((sweep_dir / "summary.md").read_text())
    print(f"sweep folder: {sweep_dir}")
