"""The decoded-image cache (`dla.data.cache`): where it lives, what its key depends on, what it does when damaged."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dla.data import cache
from dla.data.cache import cache_key, cache_root, cached_arrays

from ..conftest import PickleBomb

PARTS = {"dataset": "demo", "files": [["a.png", 10, 1]], "size": 0, "channels": 3}


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.integers(0, 256, (5, 3, 4, 4), dtype=np.uint8), "y": np.arange(5, dtype=np.int64)}


class Builder:
    """A `build` that counts its calls."""

    def __init__(self, make: Callable[[], dict[str, np.ndarray]] = arrays) -> None:
        self.make, self.calls = make, 0

    def __call__(self) -> dict[str, np.ndarray]:
        self.calls += 1
        return self.make()


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DLA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def entry_of(root: Path, label: str = "demo", parts: dict = PARTS) -> Path:
    return root / f"{label}-{cache_key(parts)}"


def test_where_the_cache_lives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLA_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("DLA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "dla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "dla"
    for off in ("off", "OFF", "0", "false", "no", "none"):
        monkeypatch.setenv("DLA_CACHE", off)
        assert cache_root() is None, off


def test_the_suite_never_uses_the_home_cache(session_cache: Path) -> None:
    assert cache_root() == session_cache and Path.home() / ".cache" not in session_cache.parents


def test_a_hit_reads_what_the_miss_wrote(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build = Builder()
    first = cached_arrays("demo", PARTS, build)
    second = cached_arrays("demo", dict(reversed(PARTS.items())), build)  # the same parts in another order
    assert build.calls == 1 and equal(first, arrays()) and equal(second, first)
    entry = entry_of(root)
    assert sorted(p.name for p in entry.iterdir()) == ["meta.json", "x.npy", "y.npy"]
    assert sorted(p.name for p in root.iterdir()) == [entry.name]  # no staging folder left behind
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("change", [
    {"size": 16}, {"channels": 1}, {"files": [["a.png", 11, 1]]}, {"files": [["a.png", 10, 2]]},
    {"files": [["a.png", 10, 1], ["b.png", 10, 1]]}, {"files": []}, {"extra": True},
])
def test_every_part_is_in_the_key(root: Path, change: dict) -> None:
    build = Builder()
    cached_arrays("demo", PARTS, build)
    cached_arrays("demo", {**PARTS, **change}, build)
    assert build.calls == 2 and cache_key({**PARTS, **change}) != cache_key(PARTS)
    assert entry_of(root).is_dir() and entry_of(root, parts={**PARTS, **change}).is_dir()


def test_a_new_format_version_misses(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = Builder()
    cached_arrays("demo", PARTS, build)
    monkeypatch.setattr(cache, "FORMAT", cache.FORMAT + 1)
    cached_arrays("demo", PARTS, build)
    assert build.calls == 2


def _flip_a_pixel(entry: Path) -> None:
    path = entry / "x.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, same header, one image byte changed
    path.write_bytes(bytes(data))


def _truncate(entry: Path) -> None:
    path = entry / "x.npy"
    path.write_bytes(path.read_bytes()[:-7])


def _other_shape(entry: Path) -> None:
    np.save(entry / "x.npy", np.zeros((5, 3, 4, 5), np.uint8))


def _pickled(entry: Path) -> None:  # a .npy that would run code if loaded with allow_pickle=True
    np.save(entry / "x.npy", np.array([PickleBomb(entry.parent / "pwned")], dtype=object), allow_pickle=True)


def _edit_meta(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(entry: Path) -> None:
        meta = json.loads((entry / "meta.json").read_text())
        edit(meta)
        (entry / "meta.json").write_text(json.dumps(meta))
    return damage


DAMAGE = {
    "pixel flipped": _flip_a_pixel,
    "npy truncated": _truncate,
    "npy of another shape": _other_shape,
    "npy pickled": _pickled,
    "npy missing": lambda e: (e / "y.npy").unlink(),
    "meta.json missing": lambda e: (e / "meta.json").unlink(),
    "meta.json not JSON": lambda e: (e / "meta.json").write_text("{not json"),
    "meta.json empty": lambda e: (e / "meta.json").write_text(""),
    "meta.json huge": lambda e: (e / "meta.json").write_text(" " * (2 << 20)),
    "meta.json a list": lambda e: (e / "meta.json").write_text("[]"),
    "meta.json digest": _edit_meta(lambda m: m["arrays"]["x"].update(digest="0" * 32)),
    "meta.json dtype": _edit_meta(lambda m: m["arrays"]["y"].update(dtype="int32")),
    "meta.json other key": _edit_meta(lambda m: m.update(key="f" * 24)),
    "meta.json other format": _edit_meta(lambda m: m.update(format=0)),
    "meta.json odd array name": _edit_meta(lambda m: m["arrays"].update({"../x": m["arrays"]["x"]})),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_entry_is_one_line_and_rebuilt(root: Path, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    build = Builder()
    cached_arrays("demo", PARTS, build)
    entry = entry_of(root)
    DAMAGE[damage](entry)
    again = cached_arrays("demo", PARTS, build)
    assert build.calls == 2 and equal(again, arrays())
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dla: ") and "corrupt or incomplete" in err[0] and str(entry) in err[0]
    assert not (root / "pwned").exists()
    # The rebuilt entry is whole again: the next call reads it quietly.
    assert equal(cached_arrays("demo", PARTS, build), arrays()) and build.calls == 2
    assert capsys.readouterr().err == ""


def test_off_never_reads_or_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DLA_CACHE", "off")
    build = Builder()
    assert equal(cached_arrays("demo", PARTS, build), arrays())
    cached_arrays("demo", PARTS, build)
    assert build.calls == 2 and list(tmp_path.iterdir()) == []


def test_an_unwritable_cache_is_skipped_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file, so nothing can be created under it (even by root)")
    monkeypatch.setenv("DLA_CACHE", str(blocker / "cache"))
    build = Builder()
    assert equal(cached_arrays("demo", PARTS, build), arrays())
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the decoded-image cache" in err[0] and "DLA_CACHE" in err[0], err
    assert equal(cached_arrays("demo", PARTS, build), arrays()) and build.calls == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_replaces_older_removes_the_labels_other_versions_only(root: Path) -> None:
    build = Builder()
    v1, v2 = PARTS, {**PARTS, "files": [["a.png", 10, 2]]}
    cached_arrays("folder-1a2b3c4d", v1, build)
    cached_arrays("folder-1a2b3c4d-extra", v1, build)  # another label that starts like this one
    cached_arrays("other", v1, build)
    busy = root / f".folder-1a2b3c4d-{cache_key(v2)}.x1y2"  # another process writing an entry right now
    busy.mkdir()
    cached_arrays("folder-1a2b3c4d", v2, build, replaces_older=True)
    names = sorted(p.name for p in root.iterdir())
    assert names == sorted([busy.name, f"folder-1a2b3c4d-{cache_key(v2)}", f"folder-1a2b3c4d-extra-{cache_key(v1)}",
                            f"other-{cache_key(v1)}"])
    cached_arrays("other", v2, build)  # without replaces_older the old version stays
    assert (root / f"other-{cache_key(v1)}").is_dir() and (root / f"other-{cache_key(v2)}").is_dir()
