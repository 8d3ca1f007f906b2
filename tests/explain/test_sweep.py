"""`dla explain SWEEP_DIR`: every finished run explained, one table of mean ± sample std, checked by hand."""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dla.explain import explain
from dla.explain.faithfulness import confidence_change
from dla.runs import cpu_model
from dla.sweep import run_sweep
from dla.train.restore import load_trained

from ..conftest import DATA_ROOT, needs_mnist, one_line_error, run_cli

TINY_CNN = ["data.name=mnist", "data.limit_train=1500", "data.val_size=500", "data.limit_test=200", "model.width=4",
            "train.epochs=1", "tracking.progress=off", "data.augment.flip=false", "data.augment.crop_padding=0",
            "tracking.tensorboard=false", "seed=0,1"]
RUNS = ["seed=0", "seed=1"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield run_sweep("cnn_fmnist", TINY_CNN, tmp_path_factory.mktemp("runs"), DATA_ROOT, "s", progress_mode="off")


def _pct(values: list[float]) -> str:
    return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}%"


def test_confidence_change_by_hand() -> None:
    class Fixed(torch.nn.Module):  # logits = the pixel sum in class 0, 0 elsewhere
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x.flatten(1).sum(1), torch.zeros(len(x))], dim=1)

    x = torch.ones(2, 1, 1, 2)
    maps = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])  # image 0 keeps half its evidence, image 1 all of it
    p = torch.sigmoid(torch.tensor([2.0, 1.0]))  # p_0 of the whole image (logit 2), of the half (logit 1)
    got = confidence_change(Fixed(), x, maps, torch.tensor([0, 0]))
    assert got["average_drop"] == pytest.approx(float((p[0] - p[1]) / p[0]) / 2)  # (drop of 0 + none) / 2
    assert got["increase"] == 0.0
    got = confidence_change(Fixed(), x, maps, torch.tensor([1, 1]))  # class 1 gains where class 0 loses
    assert got["average_drop"] == 0.0 and got["increase"] == 0.5


@needs_mnist
def test_a_sweep_folder_is_one_table_of_mean_and_std_over_its_runs(capsys: pytest.CaptureFixture[str], sweep: Path,
                                                                   tmp_path: Path) -> None:
    copy = tmp_path / "s"
    shutil.copytree(sweep, copy)
    code, out, err = run_cli(capsys, "explain", str(copy), "--n", "6")
    assert code == 0, err
    folder = copy / "explain"
    assert out == (folder / "summary.md").read_text() + f"explain folder: {folder}\n"
    per_run = {n: json.loads((copy / n / "explain" / "results.json").read_text())["methods"] for n in RUNS}
    assert json.loads((folder / "results.json").read_text())["runs"] == per_run
    # the models' training data and where the maps were measured, in the summary's caption and each run's table
    trained = json.loads((copy / RUNS[0] / "results.json").read_text())
    assert f" Models trained on {trained['data']['name']} (" in out and "epochs configured" in out
    machine = json.loads((copy / RUNS[0] / "explain" / "results.json").read_text())["machine"]
    assert machine["cpu_model"] == cpu_model() and machine["torch"] == torch.__version__
    measured = f" Measured on: {cpu_model()}, {torch.get_num_threads()} threads, cpu, torch {torch.__version__}."
    assert measured in out and measured in (copy / RUNS[0] / "explain" / "table.md").read_text()
    for name, title in (("cam", "CAM"), ("gradcam", "Grad-CAM"), ("saliency", "saliency")):
        assert (copy / RUNS[0] / "explain" / f"{name}.png").is_file()
        cells = [_pct([per_run[n][name][k] for n in RUNS]) for k in ("average_drop", "increase")]
        assert f"| all | {title} | {cells[0]} | {cells[1]} | 2 |" in out  # one config: the seeds
    # each run's number is the metric of its own maps, recomputed here
    run = load_trained(copy / RUNS[1], DATA_ROOT)
    x = run.test_x[:6].float() / 255
    pred = run.model(x).argmax(1)
    expected = confidence_change(run.model, x, explain(run.model, x, "saliency"), pred)
    assert per_run[RUNS[1]]["saliency"] == pytest.approx(expected)


@needs_mnist
def test_class_maps_of_a_sweep(capsys: pytest.CaptureFixture[str], sweep: Path, tmp_path: Path) -> None:
    from dla.explain.run import classmap_for_run

    copy = tmp_path / "s"
    shutil.copytree(sweep, copy)
    code, out, err = run_cli(capsys, "explain", str(copy), "--classmap", "--n", "2")
    assert code == 0, err
    agreement = [classmap_for_run(copy / n, 2, DATA_ROOT)[1] for n in RUNS]
    assert f"| all | {_pct(agreement)} | 2 |" in out


@needs_mnist
def test_a_bad_request_on_a_sweep_is_one_line_and_writes_nothing(capsys: pytest.CaptureFixture[str], sweep: Path,
                                                                 tmp_path: Path) -> None:
    copy = tmp_path / "s"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("explain"))
    one_line_error(capsys, ["explain", str(copy), "--target", "10"], "target 10 is out of range")
    one_line_error(capsys, ["explain", str(copy), "--method", "lime"], "unknown explanation method 'lime'")
    assert not list(copy.rglob("explain"))


def _cell(values: list[float], digits: int) -> str:
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


@needs_mnist
def test_a_sweep_ranks_the_methods_by_mean_and_std_over_its_runs(capsys: pytest.CaptureFixture[str], sweep: Path,
                                                                  tmp_path: Path) -> None:
    from dla.explain.faithfulness import deletion_insertion
    from dla.explain.sanity import spearman

    copy = tmp_path / "s"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("explain"))
    code, out, err = run_cli(capsys, "explain", str(copy), "--methods", "gradcam,saliency", "--n", "4", "--metrics",
                             "--sanity")
    assert code == 0, err
    per_run = {n: json.loads((copy / n / "explain" / "results.json").read_text()) for n in RUNS}
    # by hand: each run's mean over its 4 images, then mean ± sample std over the 2 runs
    for name, title in (("gradcam", "Grad-CAM"), ("saliency", "saliency")):
        means = {k: [statistics.fmean(per_run[n]["curves"][name][k]) for n in RUNS]
                 for k in ("deletion_auc", "insertion_auc")}
        means.update({k: [statistics.fmean(per_run[n]["sanity"]["per_image"][name][step]) for n in RUNS]
                      for k, step in (("sanity_head", "head"), ("sanity_all", "all"))})
        speed = [per_run[n]["maps_per_s"][name] for n in RUNS]
        row = (f"| all | {title} | 2 | {_cell(means['deletion_auc'], 4)} | {_cell(means['insertion_auc'], 4)} | "
               f"{_cell(means['sanity_head'], 3)} | {_cell(means['sanity_all'], 3)} | {_cell(speed, 1)} |")
        assert row in out, (row, out)
        # each run's own table.md ranks its methods over its images
        one = per_run[RUNS[0]]["curves"][name]["deletion_auc"]
        assert f"| {_cell(one, 4)} |" in (copy / RUNS[0] / "explain" / "table.md").read_text()
    summary = json.loads((copy / "explain" / "results.json").read_text())
    assert summary["ranking"][RUNS[1]]["saliency"]["deletion_auc"] == pytest.approx(means["deletion_auc"][1])

    # the numbers of run 1, recomputed here from its model: deletion AUC, and the head-randomised correlation
    run = load_trained(copy / RUNS[1], DATA_ROOT)
    x = run.test_x[:4].float() / 255
    pred = run.model(x).argmax(1)
    maps = explain(run.model, x, "saliency")
    got = deletion_insertion(run.model, x, maps, pred, 32)["deletion_auc"]
    assert per_run[RUNS[1]]["curves"]["saliency"]["deletion_auc"] == pytest.approx(got.tolist())
    torch.manual_seed(0)  # the cascade's seed; the head is the first layer it re-initialises
    run.model.head.reset_parameters()
    rho = spearman(maps, explain(run.model, x, "saliency"))
    assert per_run[RUNS[1]]["sanity"]["per_image"]["saliency"]["head"] == pytest.approx(rho[~rho.isnan()].tolist())
    one_line_error(capsys, ["explain", str(copy), "--classmap", "--sanity"], "not --classmap")
