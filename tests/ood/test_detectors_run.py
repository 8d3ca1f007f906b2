"""`dla ood RUN --methods all`: every score and detector on a tiny trained MNIST CNN; training features cached."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dla.ood import metrics
from dla.ood.data import noise_images
from dla.ood.detectors import detector_names, make_detector
from dla.ood.features import extract
from dla.ood.run import method_names
from dla.runs import RunDir
from dla.train.restore import load_trained

from ..conftest import DATA_ROOT, needs_mnist, train_run
from ..conftest import one_line_error as _one_line_error
from ..conftest import run_cli as _cli
from .test_run import TINY_CNN

LIMIT, FIT = 100, 600


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunDir]:
    yield train_run(tmp_path_factory.mktemp("runs"), "cnn_mnist", TINY_CNN)


def _ood(capsys: pytest.CaptureFixture[str], run: Path) -> tuple[int, str, str]:
    return _cli(capsys, "ood", str(run), "--ood", "noise", "--methods", "all", "--limit", str(LIMIT),
                "--fit-limit", str(FIT), "--recon-epochs", "1", "--data-root", str(DATA_ROOT))


@needs_mnist
def test_all_methods_equal_a_recomputation_and_features_are_extracted_once(
        capsys: pytest.CaptureFixture[str], cnn_run: RunDir, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(cnn_run.path, run)
    code, out, err = _ood(capsys, run)
    assert code == 0, err
    results = json.loads((run / "ood" / "results.json").read_text())
    assert results["settings"]["methods"] == method_names() and set(detector_names()) <= set(method_names())
    assert results["settings"]["detectors"]["knn"] == {"k": 50}
    assert err.count("extracting penultimate features of 600 ID training images") == 1
    assert (run / "ood" / "features_train.pt").is_file()

    # Each detector recomputed by hand: fitted on the first FIT training images, the first LIMIT test images.
    trained = load_trained(run, DATA_ROOT)
    train = extract(trained.model, trained.splits.train.x[:FIT], trained.splits.train.y[:FIT])
    id_fs = extract(trained.model, trained.splits.test.x[:LIMIT])
    ood_fs = extract(trained.model, noise_images(LIMIT, (1, 28, 28), seed=0))
    for name in detector_names():
        d = make_detector(name)
        d = d.fit(train) if d.needs_fit else d
        expected = metrics(d.score(id_fs).double().numpy(), d.score(ood_fs).double().numpy())
        got = results["ood"]["noise"]["methods"][name]
        assert all(got[k] == pytest.approx(v, abs=1e-6) for k, v in expected.items()), name
        assert f"| {name} |" in out

    # A second run reads the cached features (and autoencoder): nothing extracted or fitted, the same table.
    code, out2, err2 = _ood(capsys, run)
    assert code == 0 and "extracting" not in err2 and "fitting" not in err2 and out2 == out
    # A retrained checkpoint (other weights, other sha256) is extracted again.
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    state["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, run / "checkpoints" / "best.pt")
    code, _, err3 = _ood(capsys, run)
    assert code == 0 and err3.count("extracting penultimate features") == 1


@needs_mnist
def test_detector_options_reach_results_and_caption(capsys: pytest.CaptureFixture[str], cnn_run: RunDir,
                                                     tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(cnn_run.path, run, ignore=shutil.ignore_patterns("ood"))
    code, out, err = _cli(capsys, "ood", str(run), "--ood", "noise", "--methods", "knn,mahalanobis_pre,react",
                          "--option", "knn.k=10", "--option", "mahalanobis_pre.eps=2/255", "--limit", str(LIMIT),
                          "--fit-limit", str(FIT), "--data-root", str(DATA_ROOT))
    assert code == 0, err
    results = json.loads((run / "ood" / "results.json").read_text())
    assert results["settings"]["detectors"] == {"knn": {"k": 10}, "mahalanobis_pre": {"eps": pytest.approx(2 / 255)},
                                                "react": {"percentile": 0.9}}
    assert "Detector options: knn k=10; mahalanobis_pre eps=0.00784314; react percentile=0.9." in out
    trained = load_trained(run, DATA_ROOT)
    train = extract(trained.model, trained.splits.train.x[:FIT], trained.splits.train.y[:FIT])
    id_fs = extract(trained.model, trained.splits.test.x[:LIMIT])
    ood_fs = extract(trained.model, noise_images(LIMIT, (1, 28, 28), seed=0))
    for name, options in (("knn", {"k": 10}), ("mahalanobis_pre", {"eps": 2 / 255})):
        d = make_detector(name, **options).fit(train)
        expected = metrics(d.score(id_fs).double().numpy(), d.score(ood_fs).double().numpy())
        got = results["ood"]["noise"]["methods"][name]
        assert all(got[k] == pytest.approx(v, abs=1e-6) for k, v in expected.items()), name


@needs_mnist
@pytest.mark.parametrize(("argv", "needles"), [
    (["--methods", "all,nearest"], ["unknown OOD method 'nearest'", "knn", "or all"]),
    (["--methods", "knn", "--fit-limit", "-1"], ["--fit-limit must be a number of training images >= 0"]),
    (["--methods", "knn", "--option", "knn.k=0"], ["--option knn.k=0", "k must be a positive integer"]),
    (["--methods", "knn", "--option", "vim.d=4"], ["applies to the vim detector", "add vim to --methods"]),
])
def test_bad_detector_requests_are_one_line(capsys: pytest.CaptureFixture[str], cnn_run: RunDir, tmp_path: Path,
                                            argv: list[str], needles: list[str]) -> None:
    run = tmp_path / "copy"
    shutil.copytree(cnn_run.path, run, ignore=shutil.ignore_patterns("ood"))
    _one_line_error(capsys, ["ood", str(run), "--ood", "noise", "--limit", "20", *argv], *needles)
    assert not (run / "ood").exists()
