"""ImageFolder and MiniPlaces decode once: the decoded-image cache, its key (files, sizes, mtimes, settings)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dla.data import folder
from dla.data.registry import LoadContext, get_dataset

from ..conftest import run_cli
from .test_decoding import make_tree
from .test_miniplaces import make_miniplaces


class Counting:
    """Wraps `folder.decode_files` and counts the images it decodes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real, self.images = folder.decode_files, 0
        monkeypatch.setattr(folder, "decode_files", self)

    def __call__(self, files: list[Path], *args: object) -> torch.Tensor:
        self.images += len(files)
        return self.real(files, *args)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DLA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def load(root: Path, train: bool = True, **kw: int) -> torch.Tensor:
    ctx = LoadContext(root=root.parent, name="imagefolder", path=root.name, workers=kw.pop("workers", 2), **kw)
    return get_dataset("imagefolder").load(ctx, train).x


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []


def tree_files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_the_second_load_reads_the_cache(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(tmp_path / "ds", 30)
    before = tree_files(tmp_path / "ds")
    count = Counting(monkeypatch)
    first = load(tmp_path / "ds")
    second = load(tmp_path / "ds", workers=0)  # workers do not change the pixels, nor the key
    assert count.images == 30 and torch.equal(first, second) and second.dtype == torch.uint8
    assert len(entries(cache)) == 1 and entries(cache)[0].startswith("imagefolder-")
    assert tree_files(tmp_path / "ds") == before  # nothing written into the data folder
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("change", ["rewrite", "touch", "add", "remove"])
def test_a_changed_folder_decodes_again(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                        change: str) -> None:
    files = make_tree(tmp_path / "ds", 30)
    count = Counting(monkeypatch)
    old = load(tmp_path / "ds")
    (old_entry,) = entries(cache)
    stat = files[7].stat()
    if change == "rewrite":  # new pixels, same size and mtime as far as a coarse clock could tell
        Image.fromarray(np.full((6, 8, 3), 3, np.uint8)).save(files[7])
        os.utime(files[7], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    elif change == "touch":
        os.utime(files[7], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    elif change == "add":
        make_tree(tmp_path / "extra", 1)
        (tmp_path / "extra" / "train" / "c0" / "00000.png").rename(files[7].with_name("new.png"))
    else:
        files[7].unlink()
    new = load(tmp_path / "ds")
    assert count.images == 30 + len(new)
    (new_entry,) = entries(cache)  # the folder's outdated entry is gone
    assert new_entry != old_entry
    if change == "rewrite":
        assert (new[7] == 3).all() and torch.equal(new[:7], old[:7]) and torch.equal(new[8:], old[8:])
    load(tmp_path / "ds")
    assert count.images == 30 + len(new)  # and the new one is read


def test_each_split_and_setting_has_its_own_entry(tmp_path: Path, cache: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path / "ds", 20)
    (tmp_path / "ds" / "train").rename(tmp_path / "ds" / "test")
    make_tree(tmp_path / "ds", 30)
    count = Counting(monkeypatch)
    variants = [{}, {"image_size": 4}, {"channels": 1}, {"image_size": 4, "channels": 1}]
    shapes = [load(tmp_path / "ds", train, **kw).shape for train in (True, False) for kw in variants]
    assert shapes == [(n, c, h, w) for n in (30, 20) for c, h, w in ((3, 6, 8), (3, 4, 4), (1, 6, 8), (1, 4, 4))]
    assert count.images == 4 * 50 and len(entries(cache)) == 8
    for train in (True, False):
        for kw in variants:
            load(tmp_path / "ds", train, **kw)
    assert count.images == 4 * 50


def test_a_corrupt_entry_is_rebuilt(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(tmp_path / "ds", 30)
    count = Counting(monkeypatch)
    want = load(tmp_path / "ds")
    (entry,) = entries(cache)
    pixels = cache / entry / "x.npy"
    data = bytearray(pixels.read_bytes())
    data[len(data) // 2] ^= 0x55
    pixels.write_bytes(bytes(data))
    assert torch.equal(load(tmp_path / "ds"), want) and count.images == 60
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupt or incomplete; decoding again" in err[0]
    assert torch.equal(load(tmp_path / "ds"), want) and count.images == 60  # whole again
    assert entries(cache) == [entry]


def test_cache_off_decodes_every_time_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         session_cache: Path) -> None:
    make_tree(tmp_path / "ds", 10)
    monkeypatch.setenv("DLA_CACHE", "off")
    before = entries(session_cache)
    count = Counting(monkeypatch)
    assert torch.equal(load(tmp_path / "ds"), load(tmp_path / "ds")) and count.images == 20
    assert entries(session_cache) == before


def test_miniplaces_is_cached_by_its_lists(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_miniplaces(tmp_path / "miniplaces")
    spec = get_dataset("miniplaces")
    ctx = LoadContext(root=tmp_path, name="miniplaces", image_size=16)
    count = Counting(monkeypatch)
    first = [spec.load(ctx, train) for train in (True, False)]
    again = [spec.load(ctx, train) for train in (True, False)]
    assert count.images == 36 + 12
    assert all(torch.equal(a.x, b.x) and torch.equal(a.y, b.y) for a, b in zip(first, again, strict=True))
    assert [e.split("-")[0] for e in entries(cache)] == ["miniplaces", "miniplaces"]
    lines = (root / "val.txt").read_text().splitlines()
    (root / "val.txt").write_text("\n".join(lines[::-1]) + "\n")  # the same files, listed in another order
    test = spec.load(ctx, False)
    assert count.images == 36 + 24 and torch.equal(test.x, first[1].x.flip(0))


def test_cached_and_uncached_runs_give_identical_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(tmp_path / "ds", 60, size=(12, 12))
    args = ["run", "mnist_mlp", "data.name=imagefolder", f"data.path={tmp_path / 'ds'}", "data.channels=3",
            "data.val_size=8", "data.batch_size=16", "model.width=32", "train.epochs=1", "tracking.progress=off",
            "--out", str(tmp_path / "runs")]
    count = Counting(monkeypatch)
    results = {}
    for name, where in (("uncached", "off"), ("miss", str(tmp_path / "cache")), ("hit", str(tmp_path / "cache"))):
        monkeypatch.setenv("DLA_CACHE", where)
        code, _, err = run_cli(capsys, *args, f"run_name={name}")
        assert code == 0, err
        results[name] = json.loads((tmp_path / "runs" / "mnist_mlp" / name / "results.json").read_text())
    assert count.images == 2 * 60  # the uncached run and the miss decoded; the hit read the cache
    assert results["hit"]["test"] == results["uncached"]["test"] == results["miss"]["test"]
    assert results["hit"]["val"] == results["uncached"]["val"]
    assert results["hit"]["data"] == results["uncached"]["data"]
