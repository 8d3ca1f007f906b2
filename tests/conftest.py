"""Shared fixtures: the real data root, and quick configs that train in seconds on a CPU."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    # Absolute, as dla's resolve_data_root makes it: tests link and copy dataset files into temporary folders
    # and start processes in other folders, where a relative `../shared/data` would name nothing.
    env = os.environ.get("DLA_DATA")
    return Path(env).expanduser().resolve() if env else REPO.parent / "shared" / "data"


DATA_ROOT = _data_root()
if os.environ.get("DLA_DATA"):  # the code under test reads it too, from tests that change the working directory
    os.environ["DLA_DATA"] = str(DATA_ROOT)
# What `needs_data(NAME)` looks for under the data root: any one of these paths (MNIST comes in two layouts).
DATA_FILES: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist/MNIST/raw/train-images-idx3-ubyte.gz", "MNIST/raw/train-images-idx3-ubyte.gz"),
    "cifar10_sample": ("cifar10_sample/train",),
    "dante_inferno": ("dante_inferno/inferno.txt",),
    "rotten_tomatoes": ("rotten_tomatoes/rt-polaritydata/rt-polarity.pos",),
    "gpt2_tokenizer": ("gpt2_tokenizer/vocab.json",),
    "minilm": ("models/all-MiniLM-L6-v2/model.safetensors",),
    "tiny-gpt2": ("models/tiny-gpt2/model.safetensors",),
    "cifar10_jpeg": ("cifar10_jpeg/cifar10-jpeg.tar.gz",),
    "tiny_imagenet": ("tiny_imagenet/tiny-imagenet-200-val-test.tar.gz",),
}
# Fixtures that hand a test the data root or files from it: a test that takes one is a `data` test too.
DATA_FIXTURES = frozenset({"data_root", "real_root", "mnist_raw", "cifar_sample", "tiny_bert"})


def have_data(name: str) -> bool:
    return any((DATA_ROOT / p).exists() for p in DATA_FILES[name])


def needs_data(*names: str) -> pytest.MarkDecorator:
    """`@needs_data("mnist")`: the test reads these from the data root. It carries the `data` marker, so
    `pytest -m "not data"` leaves it out, and it skips, naming what is missing, where they are not there."""
    unknown = [n for n in names if n not in DATA_FILES]
    assert not unknown, f"unknown data {unknown}; known: {sorted(DATA_FILES)}"
    return pytest.mark.data(*names)


HAVE_MNIST = have_data("mnist")
needs_mnist = needs_data("mnist")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("data") is None and DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data())


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture runs: a module-scoped fixture that trains on MNIST must not fail for want of MNIST.
    missing = sorted({n for mark in item.iter_markers("data") for n in mark.args if not have_data(n)})
    if missing:
        pytest.skip(f"needs {', '.join(missing)} under the data root {DATA_ROOT} (set DLA_DATA to a folder "
                    "that has them)")

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


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The decoded-image cache of the whole session: never ~/.cache or the caller's DLA_CACHE.

    Session-scoped and autouse, so it is in place before any other fixture loads data; subprocesses inherit
    it. A test that wants another sets DLA_CACHE with its `monkeypatch`, which puts this one back afterwards.
    """
    path = tmp_path_factory.mktemp("dla-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLA_CACHE", str(path))
        yield path


class PickleBomb:
    """Unpickling this touches `marker`: proof that a loader executed code it should have refused."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


TINY_SHAPE = (3, 6, 6)  # (C, H, W) of `tiny_classifier`'s images


def tiny_classifier(seed: int = 0, classes: int = 5, dtype: torch.dtype = torch.float32) -> torch.nn.Sequential:
    """Normalize + conv + BatchNorm + Dropout: train mode would mix the batch and add noise, eval mode must not.

    The model the attack, OOD-score and explanation contracts borrow and must give back as they found it.
    """
    from dla.nn import Normalize

    nn = torch.nn
    torch.manual_seed(seed)
    model = nn.Sequential(
        Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3)),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(4 * TINY_SHAPE[1] * TINY_SHAPE[2], classes),
    )
    bn = model[2]
    with torch.no_grad():  # running statistics unlike any batch's, so eval and train mode give different outputs
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
    return model.to(dtype)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`dla ARGV` in-process: (exit code, stdout, stderr)."""
    from dla.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    """`dla ARGV` must fail with exit 2 and exactly one `dla: error:` line holding every needle."""
    code, _, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("dla: error: "), (code, err)
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a whole, valid PNG (not just a file with the right name)."""
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def train_run(tmp: Path, experiment: str, overrides: list[str]):
    """A real run of `experiment` under tmp/<experiment>/ on the shared data root, offline: for the commands
    (explain, attack, ood) that start from a finished run."""
    from dla.config import load_config
    from dla.tasks import run_experiment

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLA_OFFLINE", "1")
        return run_experiment(load_config(experiment, overrides), tmp / experiment, DATA_ROOT)


@pytest.fixture
def terminal_sigint() -> Iterator[None]:
    """SIGINT handled as a terminal's Ctrl-C is: a test that signals its own process must not inherit the
    "ignored" that a shell gives background jobs (which dla respects, as `nohup` users expect)."""
    import signal

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)
