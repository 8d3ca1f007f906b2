"""ODIN tuning: the T x eps grid computes ODIN itself, picks its point on validation data only, and reports it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from dla.ood import OODError, metrics, score
from dla.ood.odin_grid import OdinGrid, eps_label, grid_scores, odin_grid, parse_values
from dla.ood.plots import plot_odin_grid
from dla.runs import RunDir
from dla.train.restore import load_trained

from ..conftest import DATA_ROOT, TINY_SHAPE, needs_mnist, one_line_error, png_size, run_cli, tiny_classifier, train_run

TEMPS = [1.0, 3.0, 1000.0]
EPS = [0.0, 1 / 255, 4 / 255]


def _images(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, *TINY_SHAPE, generator=g) * 0.8 + shift).clamp(0, 1)


def test_every_cell_is_odin_and_t1_eps0_is_msp_exactly() -> None:
    model = tiny_classifier(seed=3)
    id_x, ood_x = _images(40, 1), _images(30, 2, shift=0.2)
    grid = odin_grid(model, id_x, ood_x, TEMPS, EPS, batch_size=500)
    msp = metrics(score(model, id_x, "msp", batch_size=500), score(model, ood_x, "msp", batch_size=500))
    assert grid.metrics["auroc"][0, 0] == msp["auroc"]  # bit for bit, not approximately
    assert grid.metrics["fpr95"][0, 0] == msp["fpr95"]
    # Every cell is `score(..., "odin", temperature=T, eps=e)`, computed with a shared direction per T.
    s = grid_scores(model, id_x, TEMPS, EPS, batch_size=16)  # (nT, nE, N), several chunks
    assert s.shape == (3, 3, 40)
    for i, t in enumerate(TEMPS):
        for j, e in enumerate(EPS):
            direct = score(model, id_x, "odin", temperature=t, eps=e).double()
            torch.testing.assert_close(torch.from_numpy(s[i, j]), direct, rtol=1e-5, atol=1e-6)
    # The input step moved the scores: eps > 0 is not eps = 0.
    assert not np.allclose(s[0, 2], s[0, 0])
    assert model.training  # the grid gives the model back in the mode it found it (train)


def test_chosen_cell_is_the_first_maximum_of_validation_auroc() -> None:
    auroc = np.array([[0.5, 0.9, 0.7], [0.9, 0.2, 0.9]])
    other = {k: np.zeros((2, 3)) for k in ("aupr_in", "aupr_out", "fpr95")}
    grid = OdinGrid([1.0, 10.0], [0.0, 1 / 255, 2 / 255], {"auroc": auroc, **other}, 5, 6)
    assert grid.chosen == (0, 1) and grid.chosen_temperature == 1.0 and grid.chosen_eps == 1 / 255
    js = grid.to_json()
    assert js["chosen"] == {"temperature": 1.0, "eps": 1 / 255, "val_auroc": 0.9, "val_aupr_in": 0.0,
                            "val_aupr_out": 0.0, "val_fpr95": 0.0}
    rows = grid.to_csv().splitlines()
    assert rows[0] == "temperature,eps,eps_255,auroc,aupr_in,aupr_out,fpr95,chosen"
    assert rows[2] == "1,0.0039215686,1,0.900000,0.000000,0.000000,0.000000,1" and len(rows) == 7


def test_the_choice_depends_on_the_validation_sets_only() -> None:
    model = tiny_classifier(seed=5)
    id_val, ood_val = _images(30, 11), _images(30, 12, shift=0.3)
    a = odin_grid(model, id_val, ood_val, TEMPS, EPS)
    b = odin_grid(model, id_val.clone(), ood_val.clone(), TEMPS, EPS)
    assert a.chosen == b.chosen and np.array_equal(a.metrics["auroc"], b.metrics["auroc"])
    c = odin_grid(model, id_val, _images(30, 13, shift=-0.3), TEMPS, EPS)  # other validation OOD: other grid
    assert not np.array_equal(a.metrics["auroc"], c.metrics["auroc"])


def test_values_and_labels() -> None:
    assert parse_values("0, 0.5/255,2/255", "--odin-eps", minimum=0, strict=False) == [0.0, 0.5 / 255, 2 / 255]
    assert parse_values("1,1000", "--odin-temperatures", minimum=0, strict=True) == [1.0, 1000.0]
    assert [eps_label(e) for e in (0.0, 0.5 / 255, 2 / 255, 0.0014)] == ["0", "0.5/255", "2/255", "0.0014"]
    for text, needle in [("", "is empty"), ("1,x", "'x' is not a number"), ("1/0", "is not a number"),
                         ("0,1", "must be > 0"), ("2,2", "lists a value twice")]:
        with pytest.raises(OODError, match=needle):
            parse_values(text, "--odin-temperatures", minimum=0, strict=True)
    with pytest.raises(OODError, match="must be >= 0"):
        parse_values("-1/255", "--odin-eps", minimum=0, strict=False)
    with pytest.raises(OODError, match="ODIN temperatures is empty"):
        odin_grid(tiny_classifier(), _images(4, 1), _images(4, 2), [], EPS)


def test_heatmap_is_a_png(tmp_path: Path) -> None:
    auroc = np.linspace(0.5, 1.0, 21).reshape(3, 7)
    plot_odin_grid(auroc, [1, 10, 100], [eps_label(e / 255) for e in range(7)], (2, 6), tmp_path / "g.png", "t")
    w, h = png_size(tmp_path / "g.png")
    assert w > 300 and h > 150


# ---- through `dla ood` on a tiny trained CNN -------------------------------------------------------------------

TINY_CNN = ["data.limit_train=1500", "data.val_size=500", "data.limit_test=300", "model.width=4", "train.epochs=1",
            "tracking.progress=off", "train.channels_last=false"]
GRID = ["--odin-grid", "--odin-temperatures", "1,10,1000", "--odin-eps", "0,2/255", "--limit", "100"]


@pytest.fixture(scope="module")
def heldout_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunDir]:
    yield train_run(tmp_path_factory.mktemp("runs"), "cnn_mnist_heldout", TINY_CNN)


@needs_mnist
def test_cli_grid_reports_the_validation_choice_on_test(capsys: pytest.CaptureFixture[str], heldout_run: RunDir,
                                                        tmp_path: Path) -> None:
    results = {}
    for ood in ("heldout", "noise,heldout"):  # another test set beside it: the same validation grid and choice
        run = tmp_path / ood.replace(",", "_")
        shutil.copytree(heldout_run.path, run, ignore=shutil.ignore_patterns("ood"))
        code, out, err = run_cli(capsys, "ood", str(run), "--ood", ood, "--methods", "msp,odin", "--odin-val",
                                 "noise", *GRID)
        assert code == 0, err
        results[ood] = json.loads((run / "ood" / "results.json").read_text())
        assert png_size(run / "ood" / "odin_grid_noise.png")[0] > 200
        assert len((run / "ood" / "odin_grid_noise.csv").read_text().splitlines()) == 1 + 3 * 2
    a, b = (results[k]["odin_grid"]["grids"]["noise"] for k in ("heldout", "noise,heldout"))
    assert a == b and a["n_id"] == 100 and a["n_ood"] == 100
    tuned = results["heldout"]["ood"]["heldout"]["odin_tuned"]
    assert (tuned["temperature"], tuned["eps"]) == (a["chosen"]["temperature"], a["chosen"]["eps"])
    assert tuned["validation_ood"] == "noise"
    # The tuned row is ODIN at the chosen point on the test pair, recomputed here independently.
    tr = load_trained(tmp_path / "heldout", DATA_ROOT)
    ids = score(tr.model, tr.splits.test.x[:100].float() / 255, "odin", temperature=tuned["temperature"],
                eps=tuned["eps"])
    oods = score(tr.model, tr.splits.heldout.x[:100].float() / 255, "odin", temperature=tuned["temperature"],
                 eps=tuned["eps"])
    assert tuned["auroc"] == pytest.approx(metrics(ids, oods)["auroc"], abs=1e-12)
    assert f"| heldout | odin tuned (T={tuned['temperature']:g}, eps={eps_label(tuned['eps'])}) |" in out

    # `same`: the held-out classes' *training* images are the validation OOD set.
    run = tmp_path / "same"
    shutil.copytree(heldout_run.path, run, ignore=shutil.ignore_patterns("ood"))
    code, out, err = run_cli(capsys, "ood", str(run), "--ood", "heldout", "--methods", "msp", *GRID)
    assert code == 0, err
    grid = json.loads((run / "ood" / "results.json").read_text())["odin_grid"]["grids"]["heldout"]
    assert np.array(grid["auroc"]).shape == (3, 2) and 0.5 < grid["chosen"]["val_auroc"] <= 1


@needs_mnist
@pytest.mark.parametrize(("argv", "needles"), [
    (["--odin-val", "nosie"], ["unknown --odin-val 'nosie'"]),
    (["--odin-val", "noise,fashion_mnist"], ["names 2 sets"]),
    (["--odin-val", "mnist"], ["is the run's own dataset"]),
    (["--odin-temperatures", ""], ["--odin-temperatures is empty"]),
    (["--odin-eps", "0,-1"], ["--odin-eps: '-1' must be >= 0"]),
])
def test_bad_grid_requests_are_one_line(capsys: pytest.CaptureFixture[str], heldout_run: RunDir, tmp_path: Path,
                                        argv: list[str], needles: list[str]) -> None:
    run = tmp_path / "copy"
    shutil.copytree(heldout_run.path, run, ignore=shutil.ignore_patterns("ood"))
    one_line_error(capsys, ["ood", str(run), "--ood", "noise", "--limit", "20", "--odin-grid", *argv], *needles)
    assert not (run / "ood").exists()
    one_line_error(capsys, ["ood", str(run), "--ood", "noise", "--odin-val", "noise"], "add --odin-grid")
