"""`dla list`: the experiment catalogue, or the registered models or datasets."""

from __future__ import annotations

import argparse

from dla.cli.options import Subparsers


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("list", help="the experiment catalogue, one line each")
    p.add_argument("--models", action="store_true", help="list registered models instead")
    p.add_argument("--datasets", action="store_true", help="list registered datasets instead")
    p.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> None:
    if args.models:
        _list_models()
    elif args.datasets:
        _list_datasets()
    else:
        _list_experiments()


def _list_models() -> None:
    from dla.models.registry import model_names, model_spec

    for name in model_names():
        print(f"{name:<20} {model_spec(name).description}")


def _list_datasets() -> None:
    from dla.data import dataset_names, get_dataset
    from dla.text.datasets import TEXT_DATASETS

    for name in dataset_names():
        print(f"{name:<20} {get_dataset(name).description}")
    for name, text in sorted(TEXT_DATASETS.items()):
        print(f"{name:<20} {text.description} (task={text.task})")
    print(f"{'hf:<id>':<20} any Hugging Face text-classification dataset, or a local copy (save_to_disk "
          "folder, parquet, CSV); data.text_column / data.label_column (task=textcls)")


def _list_experiments() -> None:
    from dla.config import experiment_names, read_experiment

    for name in experiment_names():
        raw = read_experiment(name)
        kind = "sweep" if raw.get("sweep") else "run"
        print(f"{name:<20} {kind:<6} {raw.get('description', '')}")
