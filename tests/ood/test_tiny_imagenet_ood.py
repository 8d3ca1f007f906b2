"""`dla ood --ood tiny_imagenet`: the test images are the OOD test set, the val images tune ODIN, and the ODIN grid
reads validation data only: every image it feeds the model is recorded and checked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dla.ood.data import load_registered
from dla.runs import RunDir
from dla.train.restore import load_trained

from ..conftest import DATA_ROOT, needs_mnist, run_cli, train_run
from ..data.tiny_archive import N_TEST, N_VAL, members, pin_archive, write_archive

TINY_CNN = ["data.limit_train=1500", "data.val_size=500", "data.limit_test=300", "model.width=4", "train.epochs=1",
            "tracking.progress=off", "train.channels_last=false"]
LIMIT = 100


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunDir]:
    yield train_run(tmp_path_factory.mktemp("runs"), "cnn_mnist", TINY_CNN)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root with the real MNIST (linked, read-only) and a small Tiny-ImageNet archive of the real layout."""
    root = tmp_path / "data"
    root.mkdir()
    mnist = DATA_ROOT / "mnist" if (DATA_ROOT / "mnist").is_dir() else DATA_ROOT / "MNIST"
    (root / mnist.name).symlink_to(mnist)
    pin_archive(monkeypatch, write_archive(root, members()))
    monkeypatch.setenv("DLA_CACHE", str(tmp_path / "cache"))
    return root


def _keys(x: torch.Tensor) -> set[bytes]:
    """uint8 or [0, 1] float images (N, C, H, W) -> one key per image (its 8-bit pixels)."""
    if x.is_floating_point():
        x = (x.detach() * 255).round().to(torch.uint8)
    return {bytes(row.numpy()) for row in x.flatten(1)}


@needs_mnist
def test_odin_tuning_reads_validation_images_only(capsys: pytest.CaptureFixture[str], cnn_run: RunDir, root: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import dla.ood.run as ood_run
    import dla.train.restore as restore

    seen: dict[str, set[bytes]] = {"grid": set(), "other": set()}
    phase = ["other"]

    def load_recorded(run_dir: Path, data_root: Path):  # every input the model is given, by phase
        run = load_trained(run_dir, data_root)
        run.model.register_forward_pre_hook(lambda _m, inputs: seen[phase[0]].update(_keys(inputs[0])))
        return run

    real_grid = ood_run.tune_odin

    def grid_recorded(*args, **kw):
        phase[0] = "grid"
        try:
            return real_grid(*args, **kw)
        finally:
            phase[0] = "other"

    monkeypatch.setattr(restore, "load_trained", load_recorded)
    monkeypatch.setattr(ood_run, "tune_odin", grid_recorded)
    # eps 0 only: every image the grid feeds the model is an unperturbed input, so it can be recognised
    code, out, err = run_cli(capsys, "ood", str(cnn_run.path), "--ood", "tiny_imagenet", "--methods", "msp,energy",
                             "--limit", str(LIMIT), "--odin-grid", "--odin-temperatures", "1,10,1000", "--odin-eps",
                             "0", "--data-root", str(root))
    assert code == 0, err

    splits = load_trained(cnn_run.path, root).splits
    id_val, id_test = _keys(splits.val.x[:LIMIT]), _keys(splits.test.x)
    tin_val = _keys(load_registered("tiny_imagenet", root, (1, 28, 28), train=True).x)
    tin_test = _keys(load_registered("tiny_imagenet", root, (1, 28, 28), train=False).x)
    assert len(id_val) == LIMIT and len(tin_val) == N_VAL and len(tin_test) == N_TEST
    assert not id_val & id_test and not tin_val & tin_test  # the check below can tell them apart
    # The grid saw exactly the ID validation images and Tiny-ImageNet's val images: no test image of either.
    assert seen["grid"] == id_val | tin_val
    assert not seen["grid"] & (id_test | tin_test)
    # Scoring saw the test images: the ID test images and Tiny-ImageNet's *test* images, never its val images.
    assert tin_test <= seen["other"] and _keys(splits.test.x[:LIMIT]) <= seen["other"]
    assert not seen["other"] & tin_val

    results = json.loads((cnn_run.path / "ood" / "results.json").read_text())
    assert results["ood"]["tiny_imagenet"]["n"] == N_TEST and results["ood"]["tiny_imagenet"]["group"] == "far"
    grid = results["odin_grid"]["grids"]["tiny_imagenet"]
    assert (grid["n_id"], grid["n_ood"]) == (LIMIT, N_VAL)
    assert "| far | tiny_imagenet | odin tuned (T=" in out
    # Unlabelled test images: the prediction plot is the bar chart, with no OOD class matrix
    assert (cnn_run.path / "ood" / "tiny_imagenet" / "confusion_ood.png").is_file()


@needs_mnist
def test_tiny_imagenet_as_the_one_validation_set(capsys: pytest.CaptureFixture[str], cnn_run: RunDir,
                                                 root: Path) -> None:
    code, _, err = run_cli(capsys, "ood", str(cnn_run.path), "--ood", "noise", "--methods", "msp", "--limit", "50",
                             "--odin-grid", "--odin-val", "tiny_imagenet", "--odin-temperatures", "1,1000",
                             "--odin-eps", "0,1/255", "--data-root", str(root))
    assert code == 0, err
    results = json.loads((cnn_run.path / "ood" / "results.json").read_text())
    assert results["odin_grid"]["grids"]["tiny_imagenet"]["n_ood"] == N_VAL  # its val images
    assert results["ood"]["noise"]["odin_tuned"]["validation_ood"] == "tiny_imagenet"
