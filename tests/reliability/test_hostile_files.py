"""Hostile files: checkpoints with pickle payloads, YAML with Python tags and damaged dataset files are
refused with one line and exit 2; nothing in them is ever executed (a marker file proves it)."""

from __future__ import annotations

import gzip
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from ..conftest import DATA_ROOT, PickleBomb, needs_mnist, one_line_error
from .conftest import RUN

pytestmark = needs_mnist

# --------------------------------------------------------------------------------------------------
# Checkpoints that would run code


def _bombs(marker: Path) -> dict[str, bytes]:
    """Two shapes of the same payload: inside a torch zip that otherwise looks like a dla checkpoint, and a
    bare pickle stream."""
    import io

    buf = io.BytesIO()
    torch.save({"format": "dla-checkpoint", "version": 1, "epoch": 1, "model": PickleBomb(marker)}, buf)
    return {"torch-zip": buf.getvalue(), "bare-pickle": pickle.dumps(PickleBomb(marker))}


def test_the_pickle_payload_is_live(tmp_path: Path, proof) -> None:
    # The control: an ordinary unpickler does run it, so "the marker is absent" below means "refused".
    marker = tmp_path / "ran"
    with proof.check("hostile"):
        pickle.loads(_bombs(marker)["bare-pickle"])
        assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("form", ["torch-zip", "bare-pickle"])
def test_checkpoints_with_pickle_payloads_are_refused_everywhere_one_is_read(
        tmp_path: Path, reference_run: Path, proof, capsys: pytest.CaptureFixture[str], form: str) -> None:
    marker = tmp_path / "ran"
    bomb = _bombs(marker)[form]
    finished = tmp_path / "finished"
    shutil.copytree(reference_run, finished)
    (finished / "checkpoints" / "best.pt").write_bytes(bomb)
    out = tmp_path / "out"
    unfinished = out / "mnist_mlp" / "r"
    shutil.copytree(reference_run, unfinished)
    (unfinished / "results.json").unlink()
    (unfinished / "checkpoints" / "last.pt").write_bytes(bomb)
    commands = {
        "resume": ["run", "mnist_mlp", *RUN, "run_name=r", "resume=true", "--out", str(out)],
        "explain": ["explain", str(finished), "--n", "2", "--method", "saliency"],
        "attack": ["attack", str(finished), "--n", "10", "--eps", "0,0.1", "--grid", "0"],
        "ood": ["ood", str(finished), "--ood", "noise", "--limit", "10", "--methods", "msp"],
        "distill teacher": ["run", "mnist_mlp", *RUN, f"distill.teacher={finished}", "--out", str(tmp_path / "s")],
    }
    for what, argv in commands.items():
        with proof.check("hostile"):
            line = one_line_error(capsys, argv, "checkpoint")
            assert "refused checkpoint" in line or "truncated or corrupt" in line, (what, line)
            assert not marker.exists(), what  # never executed


# --------------------------------------------------------------------------------------------------
# YAML with Python object tags


PAYLOADS = [
    "!!python/object/apply:os.system ['touch {m}']",
    "!!python/object/apply:subprocess.call [['touch', '{m}']]",
    "!!python/object/new:subprocess.Popen [['touch', '{m}']]",
    "!!python/name:os.system",
    "!!python/module:os",
]


def test_the_yaml_payload_is_live(tmp_path: Path, proof) -> None:
    marker = tmp_path / "ran"
    with proof.check("hostile"):
        yaml.unsafe_load(PAYLOADS[0].format(m=marker))  # what a non-safe loader would do with it
        assert marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS, ids=["apply-os.system", "apply-subprocess.call", "new-Popen",
                                                     "name-os.system", "module-os"])
def test_yaml_python_tags_are_refused_in_every_place_a_config_is_read(
        tmp_path: Path, reference_run: Path, proof, capsys: pytest.CaptureFixture[str], payload: str) -> None:
    marker = tmp_path / "ran"
    value = payload.format(m=marker)
    evil = tmp_path / "evil.yaml"
    nested = tmp_path / "nested.yaml"
    in_sweep = tmp_path / "in_sweep.yaml"
    evil.write_text(f"seed: {value}\n")
    nested.write_text(f"train:\n  epochs: 1\n  early_stopping:\n    patience: {value}\n")
    in_sweep.write_text(f"sweep:\n  seed:\n    - 0\n    - {value}\n")
    saved = tmp_path / "out" / "mnist_mlp" / "r"  # a run folder whose config.yaml was tampered with
    shutil.copytree(reference_run, saved)
    (saved / "results.json").unlink()
    (saved / "config.yaml").write_text((saved / "config.yaml").read_text().replace("seed: 0", f"seed: {value}"))
    out = ["--out", str(tmp_path / "out")]
    commands = {
        "run file": ["run", str(evil), *out],
        "config file": ["config", str(evil)],
        "nested key": ["run", str(nested), *out],
        "sweep file": ["sweep", str(in_sweep), "--name", "s", *out],
        "run override": ["run", "mnist_mlp", f"seed={value}", *out],
        "config override": ["config", "mnist_mlp", f"train.epochs={value}"],
        "saved config, resume": ["run", "mnist_mlp", *RUN, "run_name=r", "resume=true", *out],
        "saved config, explain": ["explain", str(saved), "--n", "2"],
        "saved config, teacher": ["run", "mnist_mlp", *RUN, f"distill.teacher={saved}", *out],
    }
    for what, argv in commands.items():
        with proof.check("hostile"):
            one_line_error(capsys, argv, "refused a YAML tag", "configs hold plain values only")
            assert not marker.exists(), what
    assert not (tmp_path / "out" / "evil").exists() and not (tmp_path / "out" / "in_sweep").exists()


# --------------------------------------------------------------------------------------------------
# Damaged dataset files


MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
               "t10k-labels-idx1-ubyte.gz")


def _mnist_raw() -> Path:
    for raw in (DATA_ROOT / "mnist" / "MNIST" / "raw", DATA_ROOT / "MNIST" / "raw"):
        if (raw / MNIST_FILES[0]).is_file():
            return raw
    pytest.skip(f"MNIST not found under {DATA_ROOT}")


def _damage(kind: str, good: bytes) -> bytes:
    content = gzip.decompress(good)
    if kind == "truncated .gz":
        return good[: len(good) // 2]
    if kind == "damaged deflate stream":
        return good[:200] + bytes([good[200] ^ 0xFF]) + good[201:]
    if kind == "bad gzip CRC":
        return good[:-6] + bytes([good[-6] ^ 0x01]) + good[-5:]
    if kind == "not gzip at all":
        return b"<html>404 Not Found</html>"
    if kind == "empty file":
        return b""
    if kind == "content cut, re-gzipped":
        return gzip.compress(content[: len(content) // 2])
    if kind == "one label changed":
        changed = bytearray(content)
        changed[8 + 1234] = (changed[8 + 1234] + 1) % 10  # still a well-formed IDX file
        return gzip.compress(bytes(changed))
    raise AssertionError(kind)


DAMAGE = {  # kind -> what the one-line message must say
    "truncated .gz": "is truncated or corrupt (cannot decompress it",
    "damaged deflate stream": "is truncated or corrupt (cannot decompress it",
    "bad gzip CRC": "is truncated or corrupt (cannot decompress it",
    "not gzip at all": "is truncated or corrupt (cannot decompress it",
    "empty file": "failed its sha256 check",
    "content cut, re-gzipped": "failed its sha256 check",
    "one label changed": "failed its sha256 check",
}


def test_damaged_dataset_files_fail_with_one_clear_line(tmp_path: Path, proof,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    raw = _mnist_raw()
    victim = "train-labels-idx1-ubyte.gz"
    good = (raw / victim).read_bytes()
    for i, (kind, expected) in enumerate(DAMAGE.items()):
        root = tmp_path / f"root{i}"
        copy = root / "MNIST" / "raw"
        copy.mkdir(parents=True)
        for name in MNIST_FILES:  # the shared data root is read-only: damage a private copy
            if name != victim:
                (copy / name).symlink_to(raw / name)
        (copy / victim).write_bytes(_damage(kind, good))
        out = tmp_path / f"out{i}"
        with proof.check("hostile"):
            line = one_line_error(capsys, ["run", "mnist_mlp", *RUN, "--data-root", str(root), "--out", str(out)],
                                  str(copy / victim), expected, "download again")
            assert "corrupt or truncated" in line or "truncated or corrupt" in line, (kind, line)
            assert not out.exists(), kind  # refused before a run folder was made
