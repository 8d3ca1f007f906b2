"""Shared fixtures: the real data root, and quick configs that train in seconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    env = os.environ.get("DLA_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


DATA_ROOT = _data_root()
HAVE_MNIST = (DATA_ROOT / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file() or (
    DATA_ROOT / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file()

needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason=f"MNIST not found under {DATA_ROOT} (set DLA_DATA)")

# A run that exercises the whole loop in about a second: 2,000 MNIST digits, a small MLP.
QUICK = [
    "data.limit_train=2000",
    "data.val_size=500",
    "data.limit_test=500",
    "data.batch_size=100",
    "data.augment.crop_padding=0",
    "model.width=64",
    "model.dropout=0.1",
    "train.epochs=3",
    "tracking.progress=off",
]


@pytest.fixture
def data_root() -> Path:
    return DATA_ROOT


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never reach the internet; a missing file must fail fast with the offline message.
    monkeypatch.setenv("DLA_OFFLINE", "1")


class PickleBomb:
    """Unpickling this touches `marker`: proof that a loader executed code it should have refused."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))
