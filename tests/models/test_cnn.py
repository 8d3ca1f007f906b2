"""The CNN family: depths that build (and clear messages for those that don't), shortcuts, parameter counts
against the published ResNet sizes, and the fully-convolutional view."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dla.config import load_config
from dla.errors import ConfigError
from dla.models import ModelInputs, build_model
from dla.models.cnn import CNN, CNNConfig, FullyConvolutional, PadShortcut, ResNetCifarConfig

GREY = ModelInputs((1, 28, 28), 10, (0.2860,), (0.3530,))
COLOUR = ModelInputs((3, 32, 32), 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))


def convs(model: nn.Module, main_path: bool = True) -> list[nn.Conv2d]:
    return [m for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and not (main_path and ".shortcut." in name)]


@pytest.mark.parametrize("depth", [9, 17, 33, 49])
@pytest.mark.parametrize("residual", [False, True])
def test_lab_depths_count_their_conv_layers(depth: int, residual: bool) -> None:
    model = build_model(CNNConfig(depth=depth, residual=residual), GREY)
    assert len(convs(model)) == depth
    # Plain nets have no shortcuts at all; residual ones project at the 3 stage transitions.
    assert len(convs(model, main_path=False)) - depth == (3 if residual else 0)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_plain_and_residual_differ_only_by_the_additions() -> None:
    cfg = CNNConfig(depth=17, shortcut="pad")
    torch.manual_seed(0)
    plain = build_model(cfg, GREY)
    torch.manual_seed(0)
    res = build_model(CNNConfig(depth=17, shortcut="pad", residual=True), GREY)
    # Zero-padding shortcuts have no parameters: the two nets have the same weights, same names.
    assert plain.state_dict().keys() == res.state_dict().keys()
    res.load_state_dict(plain.state_dict())
    x = torch.rand(3, 1, 28, 28)
    plain.eval(), res.eval()
    with torch.no_grad():
        assert not torch.allclose(plain(x), res(x))
        # Blocks that add zero recover the plain net: zero every block's input to its shortcut by zeroing
        # the shortcut itself.
        for m in res.modules():
            if getattr(m, "shortcut", None) is not None:
                m.shortcut = _Zero()
        torch.testing.assert_close(plain(x), res(x))


class _Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), dtype=x.dtype)


def test_pad_shortcut_subsamples_and_appends_zero_channels() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    y = PadShortcut(3, 5, 2)(x)
    assert y.shape == (2, 5, 2, 2)
    torch.testing.assert_close(y[:, :3], x[:, :, ::2, ::2])
    assert bool((y[:, 3:] == 0).all())


@pytest.mark.parametrize(("depth", "params"), [(20, 0.27e6), (56, 0.85e6)])
def test_cifar_resnets_have_the_papers_parameter_counts(depth: int, params: float) -> None:
    # He et al. 2016, Table 6: ResNet-20 0.27M, ResNet-56 0.85M parameters.
    model = build_model(ResNetCifarConfig(depth=depth), COLOUR)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - params) / params < 0.01
    assert len(convs(model)) == depth - 1  # + the linear layer = depth
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    for name in ("resnet20", "resnet56"):
        cfg = load_config("mnist_mlp", [f"model.name={name}"]).model
        assert isinstance(cfg, ResNetCifarConfig) and cfg.depth == int(name[6:])


@pytest.mark.parametrize(("cfg", "phrase"), [
    (CNNConfig(depth=10), "valid depths are 1 + 8n: 9, 17, 25, 33, 41, 49"),
    (CNNConfig(depth=9, stages=3), "valid depths are 1 + 6n: 7, 13, 19"),
    (ResNetCifarConfig(depth=21), "use one of 8, 20, 32, 44, 56, 110"),
])
def test_depths_the_blocks_cannot_build_name_the_valid_ones(cfg: CNNConfig, phrase: str) -> None:
    with pytest.raises(ConfigError, match=phrase.replace("+", r"\+")):
        build_model(cfg, GREY)


def test_the_stage_count_sets_the_depth_step() -> None:
    assert len(convs(build_model(CNNConfig(depth=13, stages=3), GREY))) == 13


def test_an_image_too_small_for_its_downsamplings_is_refused() -> None:
    tiny = ModelInputs((1, 8, 8), 10, (0.5,), (0.25,))
    with pytest.raises(ConfigError, match=r"model.stages<=3 or images of at least 16x16"):
        build_model(CNNConfig(stages=4), tiny)
    assert build_model(CNNConfig(stages=3, depth=7), tiny)(torch.rand(1, 1, 8, 8)).shape == (1, 10)


def test_a_bad_depth_from_the_command_line_is_one_clear_line(tmp_path, capsys) -> None:
    from dla.cli import main

    # Noise images (seeded, no files): the depth is refused where the model is built, after the data is loaded.
    assert main(["run", "cnn_fmnist", "data.name=noise", "model.depth=12", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.depth=12" in err and "9, 17, 25, 33" in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_switching_model_on_the_command_line_starts_from_its_defaults() -> None:
    cfg = load_config("mnist_mlp", ["model.name=cnn", "model.depth=17"])  # mnist_mlp's YAML sets mlp fields
    assert isinstance(cfg.model, CNNConfig) and cfg.model.depth == 17 and cfg.model.width == CNNConfig.width
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.dropout'"):
        load_config("mnist_mlp", ["model.name=cnn", "model.dropout=0.1"])


def test_fully_convolutional_view_averages_back_to_the_logits() -> None:
    torch.manual_seed(0)
    cnn = build_model(CNNConfig(depth=9, residual=True), GREY).eval()
    assert isinstance(cnn, CNN)
    fcn = FullyConvolutional(cnn).eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        maps = fcn(x)  # (B, K, h, w)
        assert maps.shape == (3, 10, 4, 4)
        torch.testing.assert_close(maps.mean(dim=(2, 3)), cnn(x), rtol=1e-5, atol=1e-5)
        # A larger image gives a larger map: one class score per location.
        assert fcn(torch.rand(1, 1, 112, 84)).shape == (1, 10, 14, 11)


def test_channels_last_gives_the_same_outputs() -> None:
    torch.manual_seed(0)
    model = build_model(CNNConfig(depth=9, residual=True), COLOUR).eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), ref,
                                   rtol=1e-4, atol=1e-5)


def test_zero_init_residual_starts_every_block_as_the_identity_branch() -> None:
    model = build_model(CNNConfig(depth=17, residual=True, zero_init_residual=True), GREY)
    assert all(float(b.bn2.weight.detach().abs().sum()) == 0 for s in model.stages for b in s)
    plain = build_model(CNNConfig(depth=17, zero_init_residual=True), GREY)  # no residual: nothing zeroed
    assert all(float(b.bn2.weight.detach().abs().sum()) > 0 for s in plain.stages for b in s)
