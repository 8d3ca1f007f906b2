"""Checkpoints: written atomically, read back with `weights_only=True`.

A checkpoint is a plain dict of tensors and Python primitives (weights, optimizer, scheduler, every RNG,
epoch, early-stopping state), so the weights-only unpickler can read it and nothing in it can run code.
A file that needs more than that (a pickle payload, a foreign object) is refused, never executed.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dla.errors import CheckpointError
from dla.io import atomic_write

FORMAT = "dla-checkpoint"
VERSION = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise to memory first, then write all-or-nothing: a crash leaves the previous file intact."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **state}, buf)
    with atomic_write(path) as f:
        if _HANG_IN_WRITE:
            _maybe_hang(path, f, buf.getbuffer())
        f.write(buf.getbuffer())


# Fault injection for tests/reliability, inert unless the variable is set: DLA_FAULT_HANG_IN_CHECKPOINT=last.pt:2
# makes this process's 2nd write of a file named last.pt stop half-way through (half the bytes on disk in the
# temp file) and wait there, so a test's kill -9 lands inside a checkpoint write for certain.
_HANG_IN_WRITE = os.environ.get("DLA_FAULT_HANG_IN_CHECKPOINT", "")
_writes: dict[str, int] = {}


def _maybe_hang(path: Path, f: Any, data: memoryview) -> None:
    name, _, nth = _HANG_IN_WRITE.partition(":")
    _writes[path.name] = _writes.get(path.name, 0) + 1
    if path.name != name or _writes[path.name] != int(nth or 1):
        return
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    print(f"dla-fault: hanging in write {nth or 1} of {path}", file=sys.stderr, flush=True)
    while True:
        time.sleep(1)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"refused checkpoint {path}: it holds objects a weights-only load does not "
                              f"allow ({first[:160]}); it may run code, so it was not loaded") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError, KeyError) as exc:
        # IndexError / KeyError: what torch's weights-only unpickler raises on some byte garbage.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({first[:160]}); "
                              "use checkpoints/best.pt or an earlier copy") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dla checkpoint (no '{FORMAT}' marker); "
                              "pass a checkpoint written by `dla run`")
    if obj.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {obj.get('version')}, this dla reads {VERSION}")
    return obj


def load_cache(path: Path, field: str, expected: Any, what: str, log: Callable[[str], Any]) -> dict[str, Any] | None:
    """A cache file written by `save_checkpoint` whose `field` equals `expected`, else None: absent, written for
    other settings, or unreadable (then `log` says the cached `what` is ignored; it is computed again)."""
    if not path.is_file():
        return None
    try:
        state = load_checkpoint(path)  # weights_only: a cache file cannot run code
    except CheckpointError as exc:
        log(f"ignoring the cached {what}: {exc}")
        return None
    return state if state.get(field) == expected else None


def position(state: dict[str, Any], batches: int | None = None) -> str:
    """Where a checkpoint stands: "epoch 3", or "epoch 4, batch 120 of 351" for one taken inside an epoch."""
    partial = state.get("partial")
    if not partial:
        return f"epoch {state['epoch']}"
    return f"epoch {partial['epoch']}, batch {partial['batch']}" + (f" of {batches}" if batches else "")


def rng_state() -> dict[str, Any]:
    """Every RNG the loop touches, as tensors and primitives (weights-only loadable)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(obj: Any) -> Any:
    # random.setstate wants tuples; serialisation may hand lists back.
    return tuple(_tuples(o) for o in obj) if isinstance(obj, list | tuple) else obj
