"""Hostile and unlucky inputs: bombs (YAML aliases, gzip, PNG headers), format-string injection, FIFOs,
corrupt run folders, names with a trailing newline, unwritable report paths, a model too big for memory.

Each is refused with one `dla: error:` line and exit 2 (or, reading a run folder, rendered as unreadable), never
a traceback, a hang, or memory filling up; each test builds the input that broke an earlier version.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from ..conftest import DATA_ROOT, PickleBomb, needs_data, needs_mnist, one_line_error, run_cli
from .conftest import RUN, dla, error_line

# --------------------------------------------------------------------------------------------------
# 3. YAML alias bomb


def _billion_laughs() -> str:
    """515 bytes that expand to 10^9 leaves: each level is ten aliases of the one before."""
    lines = ["a0: &a0 [" + ", ".join(["x"] * 10) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_in_one_line_everywhere_yaml_is_read(
        tmp_path: Path, proof, capsys: pytest.CaptureFixture[str]) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_billion_laughs())
    assert len(bomb.read_bytes()) < 600
    out = tmp_path / "out"
    with proof.check("inputs"):  # a real process, with a timeout: it used to hang
        done = dla(["config", str(bomb)], tmp_path, timeout=120)
        assert done.returncode == 2 and "expands to more than" in error_line(done.stderr)
    with proof.check("inputs"):
        one_line_error(capsys, ["run", str(bomb), "--out", str(out)], "expands to more than")
        assert not out.exists()  # no empty run folder left behind
    with proof.check("inputs"):  # an override holding a bomb
        one_line_error(capsys, ["config", "mnist_mlp", "description=" + _billion_laughs().replace("\n", ", ")
                                .join("{}")], "expands to more than")
    with proof.check("inputs"):  # inside a run's config.yaml: report and compare
        run = tmp_path / "r"
        run.mkdir()
        (run / "config.yaml").write_text(_billion_laughs())
        (run / "results.json").write_text('{"test": {"accuracy": 0.5}}')
        one_line_error(capsys, ["report", str(run), "--out", str(tmp_path / "r.html")], "expands to more than")
        one_line_error(capsys, ["compare", str(run), str(run)], "expands to more than")
    with proof.check("inputs"):  # a document that contains itself
        one_line_error(capsys, ["config", "mnist_mlp", "description=&a [*a]"], "contains itself")


# --------------------------------------------------------------------------------------------------
# 4. Format-string injection through sweep variants


@pytest.mark.parametrize("value", ["{sweep.__new__.__globals__[os].environ[DLA_TEST_SECRET]}",
                                   "{sweep.__class__}", "{seed[0]}", "{0}", "{sweep!r}", "{}"])
def test_sweep_variant_values_substitute_only_plain_placeholders(
        tmp_path: Path, proof, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        value: str) -> None:
    monkeypatch.setenv("DLA_TEST_SECRET", "hunter2")
    exp = tmp_path / "inj.yaml"
    exp.write_text(json.dumps({"variants": {"a": {"description": value}}, "sweep": {"variant": ["a"]}}))
    out = tmp_path / "out"
    with proof.check("inputs"):
        line = one_line_error(capsys, ["sweep", str(exp), "--out", str(out)], "is not a placeholder")
        assert "hunter2" not in line
        assert not out.exists()


def test_documented_placeholders_are_replaced_literally(proof) -> None:
    from dla.sweep import point_overrides

    variants = {"student": {"distill.teacher": "{sweep}/variant=teacher,seed={seed}", "description": "{{x}}"}}
    with proof.check("inputs"):  # a value that itself looks like a placeholder is not expanded again
        got = point_overrides({"variant": "student", "seed": 1}, variants, Path("/s/{seed}"))
        assert got == ["distill.teacher=/s/{seed}/variant=teacher,seed=1", "description={x}", "seed=1"]


# --------------------------------------------------------------------------------------------------
# 5. gzip bomb in place of a dataset file


def _gzip_bomb(path: Path, mib: int) -> None:
    """`mib` MiB of zeros in a few KB: one small gzip member, repeated (gzip readers concatenate members)."""
    member = gzip.compress(bytes(1 << 20), compresslevel=9)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(member)


@needs_mnist
def test_a_gzip_bomb_dataset_file_is_refused_at_its_expected_size(
        tmp_path: Path, proof, capsys: pytest.CaptureFixture[str]) -> None:
    from dla.data.files import read_bytes
    from dla.errors import DataError

    raw = next(r for r in (DATA_ROOT / "mnist" / "MNIST" / "raw", DATA_ROOT / "MNIST" / "raw") if r.is_dir())
    root = tmp_path / "root"
    copy = root / "MNIST" / "raw"
    copy.mkdir(parents=True)
    for f in raw.glob("*.gz"):
        if f.name != "train-images-idx3-ubyte.gz":
            (copy / f.name).symlink_to(f)
    _gzip_bomb(copy / "train-images-idx3-ubyte.gz", 4096)  # 4 GiB decompressed, 4 MB on disk
    out = tmp_path / "out"
    with proof.check("inputs"):
        one_line_error(capsys, ["run", "mnist_mlp", *RUN, "--data-root", str(root), "--out", str(out)],
                       "train-images-idx3-ubyte.gz decompresses to more than the 47,040,016 bytes", "download again")
        assert not out.exists()
    with proof.check("inputs"), pytest.raises(DataError, match="decompresses to more than the 8,388,608 bytes"):
        read_bytes(copy / "train-images-idx3-ubyte.gz", limit=8 << 20)  # a size given by the caller


# --------------------------------------------------------------------------------------------------
# 6. A model that cannot fit in memory


@needs_mnist
def test_a_model_too_big_for_memory_is_refused_in_one_line(
        tmp_path: Path, proof, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import dla.models.registry as registry

    # The same on every machine: as if 8 GiB were free (width 60000 needs 54 GiB to train).
    monkeypatch.setattr(registry, "available_memory", lambda: 8 << 30)
    out = tmp_path / "out"
    with proof.check("inputs"):
        one_line_error(capsys, ["run", "mnist_mlp", *RUN, "model.width=60000", "--out", str(out)],
                       "does not fit in memory", "3,648,000,010 parameters", "model.width")
        assert not out.exists()
    spec = registry.model_spec("mlp")

    def fails(cfg, inputs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(registry, "available_memory", lambda: None)  # unknown: the allocation itself fails
    monkeypatch.setattr(registry, "_count_parameters", lambda *a: None)
    monkeypatch.setitem(registry.MODELS.entries, "mlp", dataclasses.replace(spec, build=fails))
    with proof.check("inputs"):
        one_line_error(capsys, ["run", "mnist_mlp", *RUN, "--out", str(out)], "does not fit in memory",
                       "allocation failed")
        assert not out.exists()


# --------------------------------------------------------------------------------------------------
# 7. Image folders: a PNG whose header claims 20000 x 20000 pixels, a FIFO named x.png


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def _image_folder(root: Path) -> Path:
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (8, 8), (40 * i, 100 if cls == "a" else 200, 0)).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("hostile", ["bomb", "fifo"])
def test_hostile_image_files_are_refused_in_one_line(tmp_path: Path, proof, hostile: str) -> None:
    root = _image_folder(tmp_path / "imgs")
    victim = root / "train" / "a" / "x.png"
    if hostile == "bomb":
        victim.write_bytes(_png_header_only(20000, 20000))
    else:
        os.mkfifo(victim)
    out = tmp_path / "out"
    argv = ["run", "mnist_mlp", "data.name=imagefolder", f"data.path={root}", "data.val_size=2", "data.batch_size=2",
            "model.width=8", "train.epochs=1", "tracking.progress=off", "tracking.tensorboard=false", "--out",
            str(out)]
    with proof.check("inputs"):  # a real process with a timeout: the FIFO used to block open() forever
        done = dla(argv, tmp_path, timeout=240)
        line = error_line(done.stderr)
        assert done.returncode == 2 and str(victim) in line, line
        assert ("not a regular file" if hostile == "fifo" else "refused image") in line, line
        assert not out.exists()


# --------------------------------------------------------------------------------------------------
# 8. Corrupt or hostile run folders read by report and compare


CORRUPTIONS = {
    "config.yaml: invalid UTF-8": ("config.yaml", b"seed: 0\ndescription: \xff\xfe\n"),
    "results.json: a 5001-digit integer": ("results.json", b'{"test": {"accuracy": ' + b"9" * 5001 + b"}}"),
    "results.json: 100k-deep nesting": ("results.json", b"[" * 100_000 + b"]" * 100_000),
    "results.json: a top-level list": ("results.json", b"[1, 2, 3]"),
    "metrics.csv: a non-numeric epoch": ("metrics.csv", b"epoch,split,loss\nlots,train,0.5\n"),
}


@needs_mnist
@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_run_folders_never_give_a_traceback(tmp_path: Path, reference_run: Path, proof,
                                                    capsys: pytest.CaptureFixture[str], kind: str) -> None:
    name, content = CORRUPTIONS[kind]
    run = tmp_path / "bad"
    shutil.copytree(reference_run, run)
    (run / name).write_bytes(content)
    for argv in (["report", str(run), "--out", str(tmp_path / "r.html")], ["compare", str(run), str(reference_run)],
                 ["report", str(run), str(reference_run), "--out", str(tmp_path / "r.md")]):
        with proof.check("inputs"):  # an exception escaping main() would fail the test: no traceback
            code, _, err = run_cli(capsys, *argv)
            assert code in (0, 2), (kind, argv, err)
            if code == 2:
                line = error_line(err)
                assert str(run) in line, line


# --------------------------------------------------------------------------------------------------
# 9. Folder names with a trailing newline


def test_a_trailing_newline_in_a_folder_name_is_refused(tmp_path: Path, proof,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    with proof.check("inputs"):
        one_line_error(capsys, ["run", "mnist_mlp", 'run_name="nl\\n"', "--out", str(out)], "run_name",
                       "plain folder name")
    with proof.check("inputs"):
        one_line_error(capsys, ["sweep", "mnist_mlp", "seed=0,1", "--name", "s\n", "--out", str(out)],
                       "sweep --name", "plain folder name")
    with proof.check("inputs"):
        one_line_error(capsys, ["run", "mnist_mlp", 'device="cpu\\n"', "--out", str(out)], "device")
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# 10. An unwritable report path; a pickle model folder for `dla generate --model`


@needs_mnist
def test_a_report_into_an_unwritable_place_is_one_line(tmp_path: Path, reference_run: Path, proof,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with proof.check("inputs"):
        one_line_error(capsys, ["report", str(reference_run), "--out", "/proc/x.html"], "cannot write the report",
                       "/proc/x.html")


@needs_data("tiny-gpt2")
def test_generate_with_a_pickle_model_folder_is_one_line(tmp_path: Path, proof) -> None:
    import pickle

    model = tmp_path / "model"
    model.mkdir()
    tiny = DATA_ROOT / "models" / "tiny-gpt2"
    for f in tiny.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, model / f.name)
    marker = tmp_path / "ran"
    (model / "pytorch_model.bin").write_bytes(pickle.dumps({"w": PickleBomb(marker)}))
    with proof.check("inputs"):
        done = dla(["generate", "--model", str(model), "--max-new-tokens", "2"], tmp_path, timeout=240,
                   HF_HUB_OFFLINE="1")
        line = error_line(done.stderr)
        assert done.returncode == 2 and "pickle" in line and "refused" in line, line
        assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# 11. Raw HTML in run names and config values, in the Markdown report


@needs_mnist
def test_the_markdown_report_escapes_html(tmp_path: Path, reference_run: Path, proof,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    run = tmp_path / "x<img src=x onerror=alert(1)>"
    shutil.copytree(reference_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["description"] = "<script>alert(2)</script>"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "r.md"
    with proof.check("inputs"):
        code, _, err = run_cli(capsys, "report", str(run), str(reference_run), "--out", str(out))
        assert code == 0, err
        text = out.read_text()
        assert "<img" not in text and "<script" not in text, text
        assert "&lt;img src=x onerror=alert(1)&gt;" in text and "&lt;script&gt;" in text, text
