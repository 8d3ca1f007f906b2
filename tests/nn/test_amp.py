"""`--amp bf16`: the wrapper evaluates the same weights under bf16 autocast, and every output says it was used."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from dla.attacks.run import make_request as attack_request
from dla.errors import ConfigError
from dla.models import ModelInputs, build_model
from dla.models.cnn import CNNConfig
from dla.nn.amp import Bf16Eval, with_amp
from dla.ood.features import extract, linear_head
from dla.ood.run import make_request as ood_request
from dla.runs import RunDir

from ..conftest import DATA_ROOT, needs_mnist, train_run
from ..conftest import run_cli as _cli

TINY_CNN = ["data.limit_train=600", "data.val_size=200", "data.limit_test=100", "model.width=4", "train.epochs=1",
            "tracking.progress=off", "tracking.tensorboard=false"]


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return build_model(CNNConfig(depth=5, width=8, stages=2),
                       ModelInputs((3, 16, 16), 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))).eval()


def test_same_weights_float32_out_close_to_the_exact_logits() -> None:
    model = _cnn()
    wrapped = with_amp(model, "bf16")
    assert isinstance(wrapped, Bf16Eval) and with_amp(model, "off") is model
    assert {id(p) for p in wrapped.parameters()} == {id(p) for p in model.parameters()}  # no copy
    x = torch.rand(6, 3, 16, 16)
    with torch.no_grad():
        exact, fast = model(x), wrapped(x)
    assert fast.dtype == torch.float32 and not torch.equal(fast, exact)  # it did run in bf16
    torch.testing.assert_close(fast, exact, rtol=0.05, atol=0.05 * exact.abs().max().item())
    # The OOD detectors see the same head and bf16 features of the same shape.
    assert torch.equal(linear_head(wrapped).weight, linear_head(model).weight)
    fs, fs_exact = extract(wrapped, x), extract(model, x)
    assert fs.features.dtype == torch.float32 and fs.features.shape == fs_exact.features.shape
    torch.testing.assert_close(fs.logits, fs_exact.logits, rtol=0.05, atol=0.05 * exact.abs().max().item())


def test_input_gradients_flow_through_the_wrapper() -> None:
    wrapped = with_amp(_cnn(), "bf16")
    x = torch.rand(3, 3, 16, 16, requires_grad=True)
    wrapped(x).logsumexp(1).sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32 and x.grad.abs().sum() > 0


def test_a_model_without_features_gets_no_penultimate() -> None:
    wrapped = with_amp(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), "bf16")
    assert not hasattr(wrapped, "penultimate") and not hasattr(wrapped, "head")


def test_unknown_amp_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="--amp must be one of off, bf16; got 'fp8'"):
        attack_request("fgsm", "8/255", amp="fp8")
    with pytest.raises(ConfigError, match="--amp must be one of off, bf16"):
        ood_request("noise", "msp", amp="float16")


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunDir]:
    yield train_run(tmp_path_factory.mktemp("runs"), "cnn_mnist", TINY_CNN)


@needs_mnist
def test_attack_and_ood_record_bf16_in_results_caption_and_folder(capsys: pytest.CaptureFixture[str],
                                                                  cnn_run: RunDir, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(cnn_run.path, run)
    code, out, err = _cli(capsys, "attack", str(run), "--method", "fgsm", "--eps", "0,0.1", "--n", "40",
                          "--grid", "0", "--amp", "bf16", "--data-root", str(DATA_ROOT))
    assert code == 0, err
    folder = run / "attacks" / "fgsm_bf16"  # never the float32 result's folder
    assert json.loads((folder / "results.json").read_text())["amp"] == "bf16"
    assert "bf16 autocast" in (folder / "table.md").read_text() and "bf16 autocast" in out

    code, out, err = _cli(capsys, "ood", str(run), "--ood", "noise", "--methods", "msp,energy", "--limit", "40",
                          "--amp", "bf16", "--data-root", str(DATA_ROOT))
    assert code == 0, err
    results = json.loads((run / "ood" / "results.json").read_text())
    assert results["settings"]["amp"] == "bf16" and "bf16 autocast" in (run / "ood" / "table.md").read_text()


def test_the_cli_refuses_other_precisions(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _cli(capsys, "ood", str(tmp_path), "--amp", "fp16")
    assert code == 2 and "invalid choice: 'fp16'" in err
