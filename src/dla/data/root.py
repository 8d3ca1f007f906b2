"""Where datasets live: `--data-root`, else `$DLA_DATA`, else `./data`."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_data_root(cli_value: str | os.PathLike[str] | None = None) -> Path:
    if cli_value:
        return Path(cli_value).expanduser()
    env = os.environ.get("DLA_DATA")
    if env:
        return Path(env).expanduser()
    return Path("data")


def offline() -> bool:
    """True when downloads must not be attempted (DLA_OFFLINE=1, or Hugging Face's offline switch)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("DLA_OFFLINE", "HF_HUB_OFFLINE"))
