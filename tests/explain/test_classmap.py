"""The fully-convolutional class map: mosaics of four classes, a class vote per location."""

from __future__ import annotations

import pytest
import torch

from dla.explain.base import ExplainError
from dla.explain.classmap import fully_convolutional, mosaics, quadrant_agreement
from dla.models import ModelInputs, build_model

from ..conftest import DATA_ROOT, needs_mnist
from .test_cli import _cli, _image_size, _one_line_error, cnn_run, mlp_run  # noqa: F401  (fixtures)


def test_a_mosaic_tiles_four_images_of_four_classes_in_reading_order() -> None:
    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 2, 2)
    y = torch.tensor([3, 3, 1, 4, 0, 2])
    tiles, labels = mosaics(x, y, 1)
    assert tiles.shape == (1, 1, 4, 4) and labels.tolist() == [[3, 1, 4, 0]]  # the second 3 is skipped
    assert tiles[0, 0, :2, :2].unique().tolist() == [0.0] and tiles[0, 0, :2, 2:].unique().tolist() == [2.0]
    assert tiles[0, 0, 2:, :2].unique().tolist() == [3.0] and tiles[0, 0, 2:, 2:].unique().tolist() == [4.0]
    with pytest.raises(ExplainError, match="at least 4 different classes"):
        mosaics(x, torch.tensor([0, 0, 1, 1, 2, 2]), 1)


class QuadrantOracle(torch.nn.Module):
    """A stand-in class map: class = pixel value at every location, so each location of a mosaic votes for
    the class written in its quadrant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) -> (B, 4, H, W) one-hot of pixel value
        return torch.nn.functional.one_hot(x[:, 0].round().long(), 4).permute(0, 3, 1, 2).float()


def test_quadrant_agreement_is_one_for_an_oracle_and_a_quarter_for_a_constant(monkeypatch) -> None:
    import dla.explain.classmap as cm

    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 16, 16)
    y = torch.arange(4)
    monkeypatch.setattr(cm, "fully_convolutional", lambda model: QuadrantOracle())
    assert quadrant_agreement(None, x, y, 1) == 1.0
    monkeypatch.setattr(cm, "fully_convolutional", lambda model: (lambda t: torch.zeros(t.shape[0], 4, 5, 5)))
    assert quadrant_agreement(None, x, y, 1) == 0.25  # always class 0: right in one quadrant of four


def test_only_cnns_have_a_fully_convolutional_view() -> None:
    mlp = build_model(load_mlp_config(), ModelInputs((1, 28, 28), 10, (0.5,), (0.25,)))
    with pytest.raises(ExplainError, match="needs a CNN run"):
        fully_convolutional(mlp)


def load_mlp_config():
    from dla.models.mlp import MLPConfig

    return MLPConfig(width=8)


@needs_mnist
def test_classmap_cli_writes_the_mosaics_and_reports_agreement(capsys, cnn_run, mlp_run) -> None:  # noqa: F811
    code, out, err = _cli(capsys, "explain", str(cnn_run.path), "--classmap", "--n", "2", "--data-root",
                          str(DATA_ROOT))
    assert code == 0, err
    path, line = out.splitlines()
    assert path == str(cnn_run.path / "explain" / "classmap.png") and _image_size(cnn_run.path / "explain" /
                                                                                 "classmap.png")[1] > 300
    assert 0.0 <= float(line.rsplit(" ", 1)[1].rstrip("%")) <= 100.0
    _one_line_error(capsys, ["explain", str(mlp_run.path), "--classmap", "--data-root", str(DATA_ROOT)],
                    "needs a CNN run")
