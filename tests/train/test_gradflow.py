"""Gradient-flow recording: the numbers are the gradients and updates the optimizer really saw."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import nn

from dla.config import load_config
from dla.models import build_model
from dla.models.cnn import CNNConfig
from dla.report.gradflow import plot_gradflow, read_gradflow
from dla.train import run_experiment
from dla.train.gradflow import GradFlowRecorder, tracked_weights

from ..conftest import QUICK, needs_mnist
from ..models.test_cnn import GREY


def test_recorded_norms_and_update_ratios_equal_a_hand_computation(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = GradFlowRecorder(model, every=2, path=tmp_path / "gradflow.csv")
    expected = []
    for step in range(1, 6):
        x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        rec.before_step(step, epoch=1)
        before = [(p.detach().clone(), p.grad.norm().item()) for _, p in tracked_weights(model)]
        opt.step()
        rec.after_step()
        if step % 2 == 0:
            for i, ((name, p), (w0, g)) in enumerate(zip(tracked_weights(model), before, strict=True)):
                expected.append((step, i, name, g, w0.norm().item(), ((p - w0).norm() / w0.norm()).item()))
    with open(tmp_path / "gradflow.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["step"]), int(r["layer"]), r["name"]) for r in rows] == [e[:3] for e in expected]
    for r, e in zip(rows, expected, strict=True):
        for key, want in zip(("grad_norm", "weight_norm", "update_ratio"), e[3:], strict=True):
            assert abs(float(r[key]) - want) <= 1e-5 * abs(want) + 1e-9
        # plain SGD: the update is lr * grad, so the ratio is lr * ||g|| / ||W||
        assert abs(float(r["update_ratio"]) - 0.1 * e[3] / e[4]) <= 1e-4 * float(r["update_ratio"])
    flow = read_gradflow(tmp_path / "gradflow.csv")
    assert flow.steps.tolist() == [2, 4] and flow.grad.shape == (2, 2) and flow.names == ["0.weight", "2.weight"]


def test_shortcut_projections_are_left_out_so_plain_and_residual_line_up() -> None:
    plain = build_model(CNNConfig(depth=17), GREY)
    res = build_model(CNNConfig(depth=17, residual=True), GREY)
    assert [n for n, _ in tracked_weights(plain)] == [n for n, _ in tracked_weights(res)]
    assert len(tracked_weights(plain)) == 17 + 1  # convs + the linear head


def test_a_resumed_step_keeps_its_last_rows_and_plots_side_by_side(tmp_path: Path) -> None:
    path = tmp_path / "gradflow.csv"
    path.write_text("step,epoch,layer,name,grad_norm,weight_norm,update_ratio\n"
                    "1,1,0,a,1.0,1,0.1\n1,1,1,b,2.0,1,0.1\n2,1,0,a,3.0,1,0.1\n2,1,1,b,4.0,1,0.1\n"
                    "2,1,0,a,5.0,1,0.1\n2,1,1,b,6.0,1,0.1\n")  # step 2 again after a resume
    flow = read_gradflow(path)
    assert flow.grad.tolist() == [[1.0, 2.0], [5.0, 6.0]]
    out = plot_gradflow([("plain", flow), ("residual", flow)], tmp_path / "plots")
    assert [p.name for p in out] == ["gradflow_layers.png", "gradflow_heatmap.png", "gradflow_first_layer.png"]
    assert all(p.stat().st_size > 1000 for p in out)


@needs_mnist
def test_a_cnn_run_records_gradient_flow_and_plots_it(tmp_path: Path, data_root: Path) -> None:
    quick = [q for q in QUICK if not q.startswith(("model.", "data.augment"))]
    cfg = load_config("cnn_fmnist", [*quick, "data.name=mnist", "model.depth=9", "model.width=4",
                                     "train.epochs=2", "train.grad_flow_every=5", "data.augment.flip=false"])
    run = run_experiment(cfg, tmp_path / "runs", data_root)
    flow = read_gradflow(run.gradflow)
    steps_per_epoch = 1500 // 100
    assert flow.steps.tolist() == list(range(5, 2 * steps_per_epoch + 1, 5))
    assert flow.grad.shape == (len(flow.steps), 10) and bool((flow.grad > 0).all())
    assert flow.names[0] == "stem.0.weight" and flow.names[-1] == "head.weight"
    for name in ("gradflow_layers.png", "gradflow_heatmap.png", "gradflow_first_layer.png"):
        assert (run.plots / name).is_file()
