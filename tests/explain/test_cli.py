"""`dla explain RUN_DIR`: real image grids from a trained run, and one-line errors for bad requests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from dla.runs import RunDir

from ..conftest import DATA_ROOT, QUICK, needs_mnist, train_run
from ..conftest import one_line_error as _one_line_error
from ..conftest import run_cli as _cli

TINY_CNN = ["data.name=mnist", "data.limit_train=1500", "data.val_size=500", "data.limit_test=200", "model.width=4",
            "train.epochs=1", "tracking.progress=off", "data.augment.flip=false", "data.augment.crop_padding=0"]


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunDir]:
    yield train_run(tmp_path_factory.mktemp("runs"), "cnn_fmnist", TINY_CNN)  # a few seconds on a CPU


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunDir]:
    yield train_run(tmp_path_factory.mktemp("runs"), "mnist_mlp", [*QUICK, "train.epochs=1"])






def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()  # a whole, valid PNG, not just a file with the right name
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


@needs_mnist
def test_explain_writes_one_grid_per_method_and_all_side_by_side(capsys: pytest.CaptureFixture[str],
                                                                cnn_run: RunDir) -> None:
    code, out, err = _cli(capsys, "explain", str(cnn_run.path), "--n", "8", "--data-root", str(DATA_ROOT))
    assert code == 0, err
    folder = cnn_run.path / "explain"
    names = ["cam.png", "gradcam.png", "gradcam++.png", "integrated_gradients.png", "layercam.png", "saliency.png",
             "scorecam.png", "smoothgrad.png", "all.png"]
    assert out.split() == [str(folder / n) for n in names]
    sizes = {n: _image_size(folder / n) for n in names}
    # 8 rows of image + heatmap + overlay; all.png has an image column and heatmap + overlay per method
    assert all(h > 600 for _, h in sizes.values())
    assert sizes["all.png"][0] > 4 * sizes["cam.png"][0]  # 1 + 8 * 2 columns


@needs_mnist
def test_explain_one_method_at_a_named_layer_for_a_named_class(capsys: pytest.CaptureFixture[str],
                                                               cnn_run: RunDir, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(cnn_run.path, run)
    code, out, err = _cli(capsys, "explain", str(run), "--method", "gradcam", "--layer", "stages.2",
                          "--target", "3", "--n", "3")
    assert code == 0, err
    assert out.split() == [str(run / "explain" / "gradcam.png")]
    _, h = _image_size(run / "explain" / "gradcam.png")
    assert h < 600  # 3 rows
    code, out, err = _cli(capsys, "explain", str(run), "--methods", "smoothgrad,integrated_gradients,cam", "--n", "5")
    assert code == 0, err
    assert [Path(p).name for p in out.split()] == ["cam.png", "integrated_gradients.png", "smoothgrad.png",
                                                   "all.png"]  # registry order


@needs_mnist
@pytest.mark.parametrize(("argv", "needles"), [
    (["--method", "lime"], ["unknown explanation method 'lime'; use one of cam, gradcam, gradcam++, integrated"]),
    (["--target", "10"], ["target 10 is out of range: this run has 10 classes (0=0, 1=1"]),
    (["--target", "cat"], ["unknown target class 'cat'; this run's classes: 0=0"]),
    (["--layer", "stages.7"], ["unknown layer 'stages.7'; conv layers: stem.0,", "all layers: normalize"]),
    (["--layer", "stages.1", "--method", "cam"], ["--layer 'stages.1' only applies to the layer methods (gradcam, "
                                                  "gradcam++, layercam, scorecam)"]),
    (["--n", "0"], ["--n must be a positive number of test images; got 0"]),
    (["--n", "few"], ["argument --n: invalid int value: 'few'"]),
])
def test_bad_requests_are_one_line_and_write_nothing(capsys: pytest.CaptureFixture[str], cnn_run: RunDir,
                                                     tmp_path: Path, argv: list[str], needles: list[str]) -> None:
    run = tmp_path / "copy"
    shutil.copytree(cnn_run.path, run, ignore=shutil.ignore_patterns("explain"))
    _one_line_error(capsys, ["explain", str(run), "--n", "4", *argv], *needles)
    assert not (run / "explain").exists()


@needs_mnist
def test_cam_on_an_mlp_run_says_what_cam_needs(capsys: pytest.CaptureFixture[str], mlp_run: RunDir) -> None:
    _one_line_error(capsys, ["explain", str(mlp_run.path), "--method", "cam", "--n", "4"],
                    "MLP has no features:", "global average pooling + linear", "use --method gradcam")
    _one_line_error(capsys, ["explain", str(mlp_run.path), "--n", "4"], "MLP has no features:")  # all includes cam
    _one_line_error(capsys, ["explain", str(mlp_run.path), "--method", "gradcam", "--n", "4"],
                    "MLP has no conv layer", "layers: normalize, flatten, blocks")
    assert not (mlp_run.path / "explain").exists()
    code, out, err = _cli(capsys, "explain", str(mlp_run.path), "--method", "saliency", "--n", "4")
    assert code == 0 and _image_size(Path(out.strip()))[1] > 300, err


@needs_mnist
def test_folders_that_are_not_finished_runs(capsys: pytest.CaptureFixture[str], cnn_run: RunDir,
                                            tmp_path: Path) -> None:
    _one_line_error(capsys, ["explain", str(tmp_path / "nope")], "is not a folder")
    _one_line_error(capsys, ["explain", str(tmp_path)], "has no config.yaml")
    started = tmp_path / "started"
    started.mkdir()
    shutil.copy(cnn_run.config, started / "config.yaml")
    _one_line_error(capsys, ["explain", str(started)], "is incomplete (no checkpoints/best.pt)")
    (started / "checkpoints").mkdir()
    whole = cnn_run.best.read_bytes()
    (started / "checkpoints" / "best.pt").write_bytes(whole[: len(whole) // 2])  # a copy cut short
    _one_line_error(capsys, ["explain", str(started)], "truncated or corrupt")


@needs_mnist
def test_metrics_and_sanity_report_auc_and_randomisation(capsys: pytest.CaptureFixture[str], cnn_run: RunDir,
                                                         tmp_path: Path) -> None:
    import json

    run = tmp_path / "copy"
    shutil.copytree(cnn_run.path, run, ignore=shutil.ignore_patterns("explain"))
    code, out, err = _cli(capsys, "explain", str(run), "--methods", "gradcam,saliency", "--n", "4", "--metrics",
                          "--sanity")
    assert code == 0, err
    assert [Path(p).name for p in out.split("\n")[:4]] == ["gradcam.png", "saliency.png", "all.png", "sanity.png"]
    assert _image_size(run / "explain" / "sanity.png")[0] > 300
    assert "Deletion AUC (lower is better)" in out and "| Grad-CAM |" in out and "Spearman" in out
    results = json.loads((run / "explain" / "results.json").read_text())
    for m in ("gradcam", "saliency"):
        assert all(len(results["curves"][m][k]) == 4 for k in ("deletion_auc", "insertion_auc"))
        assert all(0 <= v <= 1 for v in results["curves"][m]["deletion_auc"])
        assert len(results["sanity"]["spearman"][m]) == len(results["sanity"]["layers"]) > 3
    assert results["sanity"]["layers"][0] == "head"
    assert "Deletion AUC" in (run / "explain" / "table.md").read_text()
    assert "## Ranking" in out and out.count("| Grad-CAM | ") == 3  # ranking, curves, sanity
    _one_line_error(capsys, ["explain", str(run), "--classmap", "--metrics"], "--metrics and --sanity check the "
                    "explanation methods' maps, not --classmap")
