"""Decoded images cached outside the data root, so a file-based dataset is decoded once per machine.

An entry is a folder `<cache>/<label>-<key>/` holding one `.npy` file per array (uint8 images, int64 labels)
and `meta.json` with each array's dtype, shape and BLAKE2b digest. The key is a hash of everything the decoded
arrays depend on (an archive's sha256, or a file list with sizes and modification times, plus the decode
settings and this module's format version), so a changed source or setting misses and decodes again. An entry
whose files do not match its digests (a crash mid-write cannot leave one: entries appear by an atomic rename,
but disks and users can) is reported on one line and rebuilt. Arrays are plain `.npy`, read with
`allow_pickle=False`: a cache file can never run code. A source that changes often (a folder of images being
edited) names its entries `<label>-<key>` with a label of its own and asks for `replaces_older`: writing a new
entry then removes that label's entries under other keys, so stale versions do not pile up.

Where: `$DLA_CACHE`, else `$XDG_CACHE_HOME/dla`, else `~/.cache/dla`. `DLA_CACHE=off` turns caching off.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1  # bump when the layout or the decoders change what they produce
_OFF = {"0", "off", "false", "no", "none"}
_META_LIMIT = 1 << 20  # meta.json is a few hundred bytes; a larger one is not ours


def cache_root() -> Path | None:
    """The cache folder, or None when `DLA_CACHE=off`."""
    env = os.environ.get("DLA_CACHE", "")
    if env.strip().lower() in _OFF:
        return None
    if env:
        return Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "dla"


def cache_key(parts: Mapping[str, Any]) -> str:
    """A short hash of `parts` (JSON-serialisable: strings, numbers, lists) and the format version."""
    blob = json.dumps({"format": FORMAT, **parts}, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _digest(a: np.ndarray) -> str:
    return hashlib.blake2b(memoryview(np.ascontiguousarray(a)).cast("B"), digest_size=16).hexdigest()


def cached_arrays(label: str, parts: Mapping[str, Any], build: Callable[[], dict[str, np.ndarray]], *,
                  replaces_older: bool = False) -> dict[str, np.ndarray]:
    """The arrays `build()` returns, from the cache when an intact entry for `parts` exists.

    `label` names the entry's folder for people (`cifar10_jpeg`, `imagefolder-<hash of the folder>`); `parts`
    decides its identity. With `replaces_older`, every other `<label>-<key>` entry is an outdated version of this
    one, removed once this one is written.
    """
    root = cache_root()
    if root is None:
        return build()
    entry = root / f"{label}-{cache_key(parts)}"
    if entry.is_dir():
        arrays = _read(entry)
        if arrays is not None:
            return arrays
        print(f"dla: the decoded-image cache {entry} is corrupt or incomplete; decoding again", file=sys.stderr)
    arrays = build()
    if _write(entry, arrays, parts) and replaces_older:
        _remove_older(entry, label)
    return arrays


def _remove_older(entry: Path, label: str) -> None:
    """Delete `label`'s entries other than `entry` (never another process's `.<name>.*` folder being written)."""
    pattern = re.compile(rf"{re.escape(label)}-[0-9a-f]{{24}}")
    for old in entry.parent.glob(f"{glob.escape(label)}-*"):
        if old != entry and pattern.fullmatch(old.name) and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def _read(entry: Path) -> dict[str, np.ndarray] | None:
    """The entry's arrays, or None when anything about it is off (missing, truncated, altered, foreign)."""
    try:
        meta_path = entry / "meta.json"
        if meta_path.stat().st_size > _META_LIMIT:
            return None
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta["format"] != FORMAT or not entry.name.endswith(f"-{meta['key']}"):
            return None
        arrays: dict[str, np.ndarray] = {}
        for name, info in meta["arrays"].items():
            if not name.isidentifier():
                return None
            a = np.load(entry / f"{name}.npy", allow_pickle=False)
            if str(a.dtype) != info["dtype"] or list(a.shape) != info["shape"] or _digest(a) != info["digest"]:
                return None
            arrays[name] = a
        return arrays
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError):
        return None


def _write(entry: Path, arrays: dict[str, np.ndarray], parts: Mapping[str, Any]) -> bool:
    """Write the entry beside its final name and rename it into place; a cache that cannot be written is skipped
    (False)."""
    meta = {"format": FORMAT, "key": cache_key(parts),
            "arrays": {k: {"dtype": str(a.dtype), "shape": list(a.shape), "digest": _digest(a)}
                       for k, a in arrays.items()}}
    tmp: Path | None = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
        for name, a in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(a), allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
        if entry.exists():  # a corrupt entry being replaced, or another process that just finished the same one
            shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
        tmp = None
        return True
    except OSError as exc:
        print(f"dla: cannot write the decoded-image cache under {entry.parent} ({exc.strerror or exc}); "
              "continuing without it (set DLA_CACHE to a writable folder, or DLA_CACHE=off)", file=sys.stderr)
        return False
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
