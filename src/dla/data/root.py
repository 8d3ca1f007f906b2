"""Where datasets live: `--data-root`, else `$DLA_DATA`, else `./data`."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_data_root(cli_value: str | os.PathLike[str] | None = None) -> Path:
    """The data root as an absolute path, resolved against the current directory once, here.

    Absolute because the root travels: into symlinks and copies made in other folders, into sweep workers,
    torchrun ranks and subprocesses that may start elsewhere. A relative `../shared/data` would name a
    different folder (or none) in each of them.
    """
    if cli_value:
        root = Path(cli_value)
    elif os.environ.get("DLA_DATA"):
        root = Path(os.environ["DLA_DATA"])
    else:
        root = Path("data")
    # resolve(), not absolute(): '..' after a symlinked folder must mean what the file system says it means.
    return root.expanduser().resolve()


def offline() -> bool:
    """True when downloads must not be attempted (DLA_OFFLINE=1, or Hugging Face's offline switch)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("DLA_OFFLINE", "HF_HUB_OFFLINE"))
