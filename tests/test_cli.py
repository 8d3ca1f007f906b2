"""The command line: each bad input is one line on stderr, exit code 2, and no run that looks complete."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import QUICK, PickleBomb, needs_mnist
from .conftest import run_cli as _cli


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dla: error: ")
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _no_complete_run(out: Path) -> None:
    assert not list(out.rglob("results.json")) if out.exists() else True


def test_list_shows_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "list")
    assert code == 0 and "mnist_mlp" in out and "mlp_depth" in out
    models = [line.split()[0] for line in _cli(capsys, "list", "--models")[1].splitlines()]
    assert {"mlp", "cnn", "resnet20", "resnet56"} <= set(models) and models == sorted(models)
    assert "fashion_mnist" in _cli(capsys, "list", "--datasets")[1]


def test_config_prints_resolved_yaml_and_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "config", "mnist_mlp", "optim.lr=0.5")
    assert code == 0 and "lr: 0.5" in out
    code, out, _ = _cli(capsys, "config", "mnist_mlp", "--keys")
    assert code == 0 and "model.width" in out and "optim.lr" in out


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["run", "no_such_experiment"], ["unknown experiment 'no_such_experiment'"]),
        (["run", "mnist_mlp", "optim.lrr=1"], ["unknown config key 'optim.lrr'"]),
        (["run", "mnist_mlp", "train.epochs=many"], ["'train.epochs' must be an integer"]),
        (["run", "mnist_mlp", "optim.lr=-0.1"], ["'optim.lr' must be > 0; got -0.1"]),
        (["frobnicate"], ["invalid choice"]),
        (["run"], ["required"]),
        (["show", "/definitely/not/here"], ["is not a folder"]),
        (["run", "mnist_mlp", "device=cuda:99"], ["device=cuda:99 but"]),
    ],
)
def test_bad_input_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str],
                               needles: list[str]) -> None:
    code, _, err = _cli(capsys, *args, *(["--out", str(tmp_path / "runs")] if args[0] == "run" else []))
    _assert_one_line_error(code, err, *needles)
    _no_complete_run(tmp_path / "runs")


def test_malformed_yaml_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: mlp\n  width: [1, 2\n")
    code, _, err = _cli(capsys, "run", str(bad), "--out", str(tmp_path / "runs"))
    _assert_one_line_error(code, err, "malformed YAML at line")
    assert not (tmp_path / "runs").exists()


def test_missing_dataset_offline_lists_the_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty_root"
    empty.mkdir()
    code, _, err = _cli(capsys, "run", "mnist_mlp", "--data-root", str(empty), "--out", str(tmp_path / "runs"))
    _assert_one_line_error(code, err, "dataset 'mnist' is missing", "MNIST/raw/train-images-idx3-ubyte.gz",
                           "offline", "--data-root")
    assert not (tmp_path / "runs").exists()
    assert list(empty.iterdir()) == []


@needs_mnist
def test_unwritable_output_dir(capsys: pytest.CaptureFixture[str], tmp_path: Path, data_root: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # a path under a regular file cannot be created, even by root
    code, _, err = _cli(capsys, "run", "mnist_mlp", *QUICK, "--out", str(blocker / "runs"),
                        "--data-root", str(data_root))
    _assert_one_line_error(code, err, "cannot write to output directory", "--out")


@needs_mnist
@pytest.mark.parametrize("damage", ["truncate", "foreign", "pickle"])
def test_damaged_checkpoint_on_resume(capsys: pytest.CaptureFixture[str], tmp_path: Path, data_root: Path,
                                      damage: str) -> None:
    out = tmp_path / "runs"
    common = [*QUICK, "train.epochs=1", "run_name=r", "--out", str(out), "--data-root", str(data_root)]
    assert _cli(capsys, "run", "mnist_mlp", *common)[0] == 0
    (out / "mnist_mlp" / "r" / "results.json").unlink()  # as if it had been interrupted
    last = out / "mnist_mlp" / "r" / "checkpoints" / "last.pt"
    marker = tmp_path / "executed"
    if damage == "truncate":
        last.write_bytes(last.read_bytes()[:1000])
    elif damage == "foreign":
        torch.save({"state_dict": {}}, last)
    else:
        torch.save({"format": "dla-checkpoint", "x": PickleBomb(marker)}, last)
    code, _, err = _cli(capsys, "run", "mnist_mlp", *common, "resume=true")
    expected = {"truncate": "truncated or corrupt", "foreign": "not a dla checkpoint", "pickle": "refused checkpoint"}
    _assert_one_line_error(code, err, expected[damage])
    assert not marker.exists()
    _no_complete_run(out)


@needs_mnist
def test_run_then_show(capsys: pytest.CaptureFixture[str], tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "runs"
    code, stdout, _ = _cli(capsys, "run", "mnist_mlp", *QUICK, "run_name=x", "--out", str(out),
                           "--data-root", str(data_root))
    assert code == 0 and "| Run | Loss | Accuracy | Precision | Recall | F1 |" in stdout
    code, shown, _ = _cli(capsys, "show", str(out / "mnist_mlp" / "x"))
    assert code == 0 and shown == (out / "mnist_mlp" / "x" / "summary.md").read_text()


@needs_mnist
def test_an_experiment_without_a_model_section_trains_the_default_model(capsys: pytest.CaptureFixture[str],
                                                                        tmp_path: Path, data_root: Path) -> None:
    f = tmp_path / "x.yaml"  # the newcomer's first experiment file: no model section
    f.write_text("description: x\ndata: {name: mnist, limit_train: 1000, val_size: 200}\ntrain: {epochs: 1}\n")
    code, stdout, err = _cli(capsys, "run", str(f), "data.limit_test=500", "tracking.progress=off",
                             "tracking.tensorboard=false", "--out", str(tmp_path / "runs"),
                             "--data-root", str(data_root))
    assert code == 0, err
    assert "x: mlp (" in stdout and (tmp_path / "runs" / "x").is_dir()


COMMANDS = ["list", "run", "sweep", "report", "compare", "show", "lab", "verdicts", "docs", "explain", "attack", "ood",
            "generate", "config", "tokenize"]


def test_every_command_is_registered_in_order_with_its_handler() -> None:
    import argparse

    from dla.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == COMMANDS  # the order `dla --help` lists them in
    for name, command in sub.choices.items():
        assert command.get_default("func").__name__ == f"cmd_{name}", name


@pytest.mark.parametrize("launch", ["console script", "python -m dla", "python -m dla.cli"])
def test_console_script_is_installed(launch: str) -> None:
    # `python -m dla.cli` is how torchrun and accelerate launch the command (docs/usage.md).
    env = {**os.environ, "DLA_OFFLINE": "1"}
    exe = {"console script": [str(Path(sys.executable).with_name("dla"))],
           "python -m dla": [sys.executable, "-m", "dla"], "python -m dla.cli": [sys.executable, "-m", "dla.cli"]}
    proc = subprocess.run([*exe[launch], "run", "nope"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "Traceback" not in proc.stderr


def test_wandb_requested_but_missing(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    code, _, err = _cli(capsys, "run", "mnist_mlp", "tracking.wandb=true", "--out", str(tmp_path / "runs"))
    _assert_one_line_error(code, err, "tracking.wandb=true needs the wandb package")
    assert not (tmp_path / "runs").exists()
