"""`dla ood RUN_DIR`: real tables and plots from a tiny trained MNIST CNN, checked against independent recomputation."""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from dla.data.mnist import FASHION_CLASSES
from dla.ood import metrics, score
from dla.ood.data import load_registered, noise_images
from dla.ood.recon import ConvAutoencoder
from dla.runs import RunDir
from dla.train.checkpoint import load_checkpoint
from dla.train.restore import load_trained

from ..conftest import DATA_ROOT, HAVE_MNIST, QUICK, needs_mnist, train_run
from ..conftest import one_line_error as _one_line_error
from ..conftest import run_cli as _cli

# About 5 s on one CPU thread: 1,000 training digits, a width-4 CNN, one epoch.
TINY_CNN = ["data.limit_train=1500", "data.val_size=500", "data.limit_test=300", "model.width=4", "train.epochs=1",
            "tracking.progress=off", "train.channels_last=false"]
LIMIT = 150


@functools.cache
def _have_fashion() -> bool:
    try:
        load_registered("fashion_mnist", DATA_ROOT, (1, 28, 28))
    except Exception:
        return False
    return True


def needs_fashion(test):
    """MNIST from the data root (a `data` test) and Fashion-MNIST from it or from Debian's package."""
    have = HAVE_MNIST and _have_fashion()
    return needs_mnist(pytest.mark.skipif(not have, reason="Fashion-MNIST not found (under the data root or in "
                                                          "/usr/share/datasets/fashion-mnist)")(test))


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunDir]:
    yield train_run(tmp_path_factory.mktemp("runs"), "cnn_mnist", TINY_CNN)


@pytest.fixture(scope="module")
def heldout_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunDir]:
    yield train_run(tmp_path_factory.mktemp("runs"), "cnn_mnist_heldout", TINY_CNN)






def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()  # a whole, valid PNG
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def _table_rows(text: str) -> dict[tuple[str, str], list[float]]:
    """(OOD set, method) -> the four numbers of each set's row (group means left out; inverted marks dropped)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 7 and cells[0] != "group" and not cells[1].startswith("mean of"):
            rows[(cells[1], cells[2])] = [float(c.replace("†", "")) for c in cells[3:]]
    return rows


@needs_fashion
def test_cli_end_to_end_table_equals_independent_metrics(capsys: pytest.CaptureFixture[str], cnn_run: RunDir,
                                                          tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(cnn_run.path, run)
    code, out, err = _cli(capsys, "ood", str(run), "--ood", "fashion_mnist,noise", "--methods",
                          "msp,maxlogit,energy,odin,recon", "--limit", str(LIMIT), "--recon-epochs", "1",
                          "--data-root", str(DATA_ROOT))
    assert code == 0, err
    folder = run / "ood"
    assert out.strip().endswith(f"ood folder: {folder}")
    assert out.replace(f"ood folder: {folder}\n", "") == (folder / "table.md").read_text()
    assert "fitting the pixels autoencoder" in err  # progress goes to stderr, the table to stdout
    results = json.loads((folder / "results.json").read_text())
    methods = ["msp", "maxlogit", "energy", "odin", "recon"]
    assert results["settings"]["methods"] == methods and results["id"]["n"] == LIMIT

    # Recompute every score without the pipeline: the run's weights, its first LIMIT test images, the OOD images.
    trained = load_trained(run, DATA_ROOT)
    ae = ConvAutoencoder((1, 28, 28))
    ae.load_state_dict(load_checkpoint(folder / "autoencoder.pt")["model"])
    options = {"odin": {"temperature": 1000.0, "eps": 0.0014}, "recon": {"autoencoder": ae.eval()}}
    id_x = trained.splits.test.x[:LIMIT].float() / 255
    oods = {"fashion_mnist": load_registered("fashion_mnist", DATA_ROOT, (1, 28, 28)).x[:LIMIT].float() / 255,
            "noise": noise_images(LIMIT, (1, 28, 28), seed=0).float() / 255}
    table = _table_rows(out)
    assert len(table) == 2 * len(methods)
    for name, ood_x in oods.items():
        assert results["ood"][name]["n"] == LIMIT
        for m in methods:
            expected = metrics(score(trained.model, id_x, m, **options.get(m, {})),
                               score(trained.model, ood_x, m, **options.get(m, {})))
            got = results["ood"][name]["methods"][m]
            for key, value in expected.items():
                assert got[key] == pytest.approx(value, abs=1e-6), (name, m, key)
            assert table[(name, m)] == pytest.approx([round(expected[k], 4) for k in
                                                      ("auroc", "aupr_in", "aupr_out", "fpr95")], abs=1.1e-4)
    # Predicted-class fractions of the OOD images are the classifier's argmax.
    with torch.no_grad():
        pred = trained.model(oods["fashion_mnist"]).argmax(1)
    assert results["ood"]["fashion_mnist"]["predicted_class_fraction"] == pytest.approx(
        (torch.bincount(pred, minlength=10).double() / LIMIT).tolist())
    # Every plot is a whole PNG.
    names = ["confusion_id.png"] + [f"{s}/{p}" for s in oods for p in
                                    ["roc.png", "pr.png", "confusion_ood.png"] + [f"{k}_{m}.png" for m in methods
                                                                                  for k in ("hist", "sorted")]]
    for n in names:
        w, h = _png(folder / n)
        assert w > 300 and h > 200, n
    # Fashion-MNIST is labelled: its confusion plot adds the class matrix, so it is wider than noise's bar chart.
    widths = {s: _png(folder / s / "confusion_ood.png")[0] for s in oods}
    assert widths["fashion_mnist"] > 1.5 * widths["noise"]

    # A second call reuses the cached autoencoder (no fitting) and gives the same table.
    code, out2, err2 = _cli(capsys, "ood", str(run), "--ood", "fashion_mnist,noise", "--methods",
                            "msp,maxlogit,energy,odin,recon", "--limit", str(LIMIT), "--recon-epochs", "1",
                            "--data-root", str(DATA_ROOT))
    assert code == 0 and "fitting" not in err2 and out2 == out


@needs_mnist
def test_heldout_classes_are_the_ood_set(capsys: pytest.CaptureFixture[str], heldout_run: RunDir) -> None:
    trained = load_trained(heldout_run.path, DATA_ROOT)
    splits = trained.splits
    assert splits.classes == ["0", "1", "2", "3", "4", "5"]
    assert trained.model.head.out_features == 6
    # Labels are remapped to 0..5 and the held-out set is exactly the test digits 6-9, with their own labels.
    from dla.data import get_dataset
    from dla.data.registry import LoadContext

    test = get_dataset("mnist").load(LoadContext(root=DATA_ROOT, name="mnist"), False)
    kept = test.y < 6
    assert torch.equal(splits.test.x, test.x[kept][:300]) and torch.equal(splits.test.y, test.y[kept][:300])
    assert torch.equal(splits.heldout.x, test.x[~kept][:300]) and torch.equal(splits.heldout.y, test.y[~kept][:300])
    assert set(splits.train.y.unique().tolist()) == set(range(6))
    code, out, err = _cli(capsys, "ood", str(heldout_run.path), "--ood", "heldout,noise", "--methods", "msp,energy",
                          "--limit", "100", "--data-root", str(DATA_ROOT))
    assert code == 0, err
    results = json.loads((heldout_run.path / "ood" / "results.json").read_text())
    assert results["ood"]["heldout"]["n"] == 100 and results["id"]["classes"] == splits.classes
    assert set(_table_rows(out)) == {(s, m) for s in ("heldout", "noise") for m in ("msp", "energy")}
    _png(heldout_run.path / "ood" / "heldout" / "confusion_ood.png")


@needs_fashion
def test_fashion_classes_in_the_reverse_direction() -> None:
    # The reverse pair's OOD set: MNIST converted to a Fashion-MNIST run's shape (the same shape: unchanged).
    data = load_registered("mnist", DATA_ROOT, (1, 28, 28))
    assert data.x.shape == (10000, 1, 28, 28) and data.classes[0] == "0"
    assert load_registered("fashion_mnist", DATA_ROOT, (3, 32, 32)).classes == FASHION_CLASSES


@needs_mnist
@pytest.mark.parametrize(("argv", "needles"), [
    (["--methods", "msp,gram"], ["unknown OOD method 'gram'; use a comma list of energy, maxlogit"]),
    (["--ood", "cifar11"], ["unknown OOD set 'cifar11'; use a dataset (",
                            "imagefolder:PATH, noise, gaussian, fgsm[:EPS]", "or heldout"]),
    (["--ood", "noise,"], ["--ood 'noise,' has an empty name"]),
    (["--ood", "noise,noise"], ["names a set twice"]),
    (["--ood", "imagefolder"], ["--ood imagefolder needs a folder: imagefolder:PATH"]),
    (["--ood", "heldout"], ["--ood heldout needs a run trained on some classes only (data.classes=[...]"]),
    (["--limit", "-1"], ["--limit must be a number of images per set >= 0"]),
    (["--limit", "many"], ["argument --limit: invalid int value: 'many'"]),
    (["--methods", "odin", "--temperature", "0"], ["--temperature must be > 0"]),
    (["--methods", "odin", "--eps", "-0.1"], ["--eps must be >= 0"]),
    (["--recon-features"], ["--recon-features applies to the recon score; add recon to --methods"]),
    (["--methods", "recon", "--recon-epochs", "0"], ["--recon-epochs must be >= 1"]),
])
def test_bad_requests_are_one_line_and_write_nothing(capsys: pytest.CaptureFixture[str], cnn_run: RunDir,
                                                     tmp_path: Path, argv: list[str], needles: list[str]) -> None:
    run = tmp_path / "copy"
    shutil.copytree(cnn_run.path, run, ignore=shutil.ignore_patterns("ood"))
    _one_line_error(capsys, ["ood", str(run), "--ood", "noise", "--limit", "20", *argv], *needles)
    assert not (run / "ood").exists()


@needs_mnist
def test_recon_features_needs_a_model_with_features(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    mlp = train_run(tmp_path, "mnist_mlp", [*QUICK, "train.epochs=1"])
    _one_line_error(capsys, ["ood", str(mlp.path), "--ood", "noise", "--methods", "recon", "--recon-features"],
                    "MLP has no features(x) method", "drop --recon-features")
    assert not (mlp.path / "ood").exists()
    code, out, err = _cli(capsys, "ood", str(mlp.path), "--ood", "noise", "--methods", "msp", "--limit", "50")
    assert code == 0 and "| noise | msp |" in out, err


def test_folders_that_are_not_runs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _one_line_error(capsys, ["ood", str(tmp_path / "nope")], "is not a folder")
    _one_line_error(capsys, ["ood", str(tmp_path)], "has no config.yaml")
