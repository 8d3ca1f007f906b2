"""The ID training features are extracted once per checkpoint: reused from RUN_DIR/ood/, recomputed when it changes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dla.models import ModelInputs, build_model
from dla.models.cnn import CNNConfig
from dla.ood.features import extract, train_features


def _run(tmp_path: Path, seed: int = 0) -> SimpleNamespace:
    """What train_features reads of a TrainedRun: path (with checkpoints/best.pt), model, splits.train."""
    torch.manual_seed(seed)
    model = build_model(CNNConfig(width=4, stages=2), ModelInputs((1, 8, 8), 3, (0.5,), (0.25,))).eval()
    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    torch.save(model.state_dict(), tmp_path / "checkpoints" / "best.pt")
    g = torch.Generator().manual_seed(1)
    train = SimpleNamespace(x=torch.randint(0, 256, (30, 1, 8, 8), dtype=torch.uint8, generator=g),
                            y=torch.arange(30) % 3)
    return SimpleNamespace(path=tmp_path, model=model, splits=SimpleNamespace(train=train))


def _counting(model: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    forward = model.penultimate

    def penultimate(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return forward(x)

    model.penultimate = penultimate
    return calls


def test_extract_matches_the_model(tmp_path: Path) -> None:
    run = _run(tmp_path)
    fs = extract(run.model, run.splits.train.x, run.splits.train.y, batch_size=7)  # 5 chunks
    with torch.no_grad():
        logits = run.model(run.splits.train.x.float() / 255)
    torch.testing.assert_close(fs.logits, logits, rtol=1e-5, atol=1e-6)
    assert fs.features.shape == (30, 8) and torch.equal(fs.labels, run.splits.train.y)


def test_second_call_reuses_and_a_new_checkpoint_recomputes(tmp_path: Path) -> None:
    run = _run(tmp_path)
    out, lines = tmp_path / "ood", []
    calls = _counting(run.model)
    first = train_features(out, run, log=lines.append)
    assert calls and (out / "features_train.pt").is_file() and "extracting" in lines[0]
    calls.clear()
    again = train_features(out, run, log=lines.append)
    assert calls == [] and len(lines) == 1  # read from the cache: the network did not run
    assert torch.equal(again.features, first.features) and torch.equal(again.logits, first.logits)
    assert torch.equal(again.labels, first.labels) and torch.equal(again.head.weight, first.head.weight)
    # Another checkpoint in the same folder (retrained: other weights, other sha256): computed again.
    retrained = _run(tmp_path, seed=1)
    calls = _counting(retrained.model)
    third = train_features(out, retrained, log=lines.append)
    assert calls and len(lines) == 2 and not torch.equal(third.features, first.features)
    # A different number of training images is a different extraction too.
    calls.clear()
    assert len(train_features(out, retrained, limit=12, log=lines.append)) == 12 and calls == [12]


def test_a_corrupt_cache_is_recomputed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run(tmp_path)
    out = tmp_path / "ood"
    out.mkdir()
    (out / "features_train.pt").write_bytes(b"not a checkpoint")
    lines: list[str] = []
    fs = train_features(out, run, log=lines.append)
    assert len(fs) == 30 and "ignoring the cached training features" in lines[0] and "\n" not in lines[0]
