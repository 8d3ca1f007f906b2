"""The Vision Transformer: tokens, attention against the formula, local windows, stochastic depth, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dla.config import load_config
from dla.errors import ConfigError
from dla.models import ModelInputs, build_model
from dla.models.vit import Attention, DropPath, ViT, ViTConfig, window_mask
from dla.train import run_experiment

from ..data.conftest import set_checksums  # noqa: F401  (fixture)
from ..data.test_datasets import write_cifar10

GREY = ModelInputs((1, 28, 28), 10, (0.5,), (0.25,))
COLOUR = ModelInputs((3, 32, 32), 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def small(**kw: object) -> ViTConfig:
    return ViTConfig(**{"dim": 16, "depth": 2, "heads": 2, "drop_path": 0.0, **kw})


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_patches_become_tokens(pool: str) -> None:
    model = build_model(small(pool=pool), GREY)
    assert isinstance(model, ViT) and model.grid == (7, 7)  # 28 / 4
    tokens = model.tokens(torch.rand(3, 1, 28, 28))
    assert tokens.shape == (3, 49 + (pool == "cls"), 16)
    assert (model.cls_token is not None) == (pool == "cls")
    assert model.pos_embed.shape == (1, 49 + (pool == "cls"), 16)
    # The patch embedding is one linear map per 4x4 patch: patch (r, c) = pixels [4r:4r+4, 4c:4c+4].
    x = torch.rand(2, 1, 28, 28)
    emb = model.patch_embed(model.normalize(x)).flatten(2).transpose(1, 2)  # (2, 49, 16)
    patch = model.normalize(x)[:, :, 8:12, 12:16].reshape(2, 16)  # row 2, column 3 -> token 2 * 7 + 3
    w = model.patch_embed.weight.view(16, 16)
    torch.testing.assert_close(emb[:, 2 * 7 + 3], patch @ w.T + model.patch_embed.bias)
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    assert build_model(small(pool=pool, pos_embed="none"), COLOUR).pos_embed is None


def test_attention_is_the_softmax_formula_with_and_without_a_mask() -> None:
    torch.manual_seed(0)
    attn = Attention(dim=12, heads=3, dropout=0.0).eval()
    x = torch.randn(2, 5, 12)
    mask = torch.rand(5, 5) < 0.6
    mask |= torch.eye(5, dtype=torch.bool)  # every query sees at least itself

    def reference(m: torch.Tensor | None) -> torch.Tensor:
        q, k, v = attn.qkv(x).split(12, dim=-1)  # (2, 5, 12) each
        heads = [slice(4 * h, 4 * h + 4) for h in range(3)]
        out = []
        for hs in heads:
            scores = q[..., hs] @ k[..., hs].transpose(1, 2) / math.sqrt(4)  # (2, 5, 5)
            if m is not None:
                scores = scores.masked_fill(~m, float("-inf"))
            out.append(scores.softmax(-1) @ v[..., hs])
        return attn.proj(torch.cat(out, dim=-1))

    with torch.no_grad():
        torch.testing.assert_close(attn(x, None), reference(None))
        torch.testing.assert_close(attn(x, mask), reference(mask))


def test_window_mask_is_the_neighbourhood_of_each_patch() -> None:
    mask = window_mask((7, 7), 3, cls_token=False)  # (49, 49)
    assert mask.shape == (49, 49) and torch.equal(mask, mask.T)
    per_query = mask.sum(1).view(7, 7)
    assert per_query[3, 3] == 9 and per_query[0, 0] == 4 and per_query[0, 3] == 6  # zero-padded borders
    assert mask[3 * 7 + 3].view(7, 7)[2:5, 2:5].all() and mask[3 * 7 + 3].sum() == 9
    with_cls = window_mask((7, 7), 3, cls_token=True)
    assert with_cls.shape == (50, 50) and with_cls[0].all() and with_cls[:, 0].all()
    assert torch.equal(with_cls[1:, 1:], mask)


def test_local_windows_limit_what_a_token_sees() -> None:
    """With window=3 and one block, patch (3, 3)'s token ignores a change at patch (0, 0); global attention does not."""
    torch.manual_seed(0)
    x = torch.rand(1, 1, 28, 28)
    changed = x.clone()
    changed[:, :, :4, :4] = torch.rand(4, 4)  # patch (0, 0)
    for window, moves in ((3, False), (0, True)):
        model = build_model(small(depth=1, pool="mean", window=window), GREY).eval()
        with torch.no_grad():
            a, b = model.tokens(x)[0, 3 * 7 + 3], model.tokens(changed)[0, 3 * 7 + 3]
        assert (not torch.allclose(a, b)) == moves, window
    # Two blocks see two windows deep: (2, 2) reaches (0, 0) through (1, 1), (3, 3) still does not.
    model = build_model(small(depth=2, pool="mean", window=3), GREY).eval()
    with torch.no_grad():
        t, u = model.tokens(x)[0], model.tokens(changed)[0]
    assert not torch.allclose(t[2 * 7 + 2], u[2 * 7 + 2]) and torch.allclose(t[3 * 7 + 3], u[3 * 7 + 3])
    # The mask follows from the config: it is not in the state dict, so both variants share checkpoints.
    assert set(model.state_dict()) == set(build_model(small(depth=2, pool="mean"), GREY).state_dict())


def test_stochastic_depth() -> None:
    model = build_model(small(depth=5, drop_path=0.2), GREY)
    assert [round(b.drop_path.p, 6) for b in model.blocks] == [0.0, 0.05, 0.1, 0.15, 0.2]  # linear in depth
    drop = DropPath(0.5)
    x = torch.ones(4000, 3, 2)
    torch.manual_seed(0)
    y = drop(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}  # whole samples dropped, the rest scaled by 1/keep
    assert (per_sample.min(1).values == per_sample.max(1).values).all()
    assert abs(y.mean().item() - 1.0) < 0.05  # unbiased in expectation
    drop.eval()
    assert drop(x) is x
    # In eval mode the whole model is deterministic.
    model.eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))


def test_a_vit_fits_a_small_batch() -> None:
    torch.manual_seed(0)
    model = build_model(small(dim=32, heads=4, depth=2), COLOUR)
    x, y = torch.rand(32, 3, 32, 32), torch.randint(0, 10, (32,))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = F.cross_entropy(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first  # memorises 32 random images: gradients flow through every part


@pytest.mark.parametrize(("overrides", "inputs", "message"), [
    ({"patch_size": 5}, GREY, r"model\.patch_size=5 does not divide the 28x28 images.*valid patch sizes for "
                              r"28x28: 1, 2, 4, 7, 14, 28"),
    ({"patch_size": 3}, COLOUR, r"valid patch sizes for 32x32: 1, 2, 4, 8, 16, 32"),
    ({"dim": 30, "heads": 4}, GREY, r"model\.dim=30 is not divisible by model\.heads=4.*heads in 1, 2, 3, 5, 6"),
    ({"window": 4}, GREY, r"model\.window=4 must be odd"),
    ({"window": 9}, GREY, r"model\.window=9 is larger than the 7x7 patch grid .*patch_size=4.*window <= 7"),
])
def test_bad_configs_are_one_clear_error(overrides: dict, inputs: ModelInputs, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as exc:
        build_model(small(**overrides), inputs)
    assert "\n" not in str(exc.value)


def test_config_errors_through_the_experiment_loader() -> None:
    with pytest.raises(ConfigError, match=r"model\.pool' must be one of cls, mean"):
        load_config("vit_fmnist", ["model.pool=max"])
    with pytest.raises(ConfigError, match=r"model\.drop_path' must be < 1"):
        load_config("vit_fmnist", ["model.drop_path=1.0"])


def test_another_image_size_at_run_time_is_a_clear_error() -> None:
    model = build_model(small(), GREY)
    with pytest.raises(ConfigError, match=r"built for 28x28 images.*got 32x32"):
        model(torch.rand(1, 1, 32, 32))


def test_the_vit_cifar10_experiment_runs_end_to_end(tmp_path: Path, set_checksums) -> None:  # noqa: F811
    root = tmp_path / "data"
    write_cifar10(root, n=9)  # stand-in files in CIFAR-10's own format: 45 training and 10 test images
    set_checksums("cifar10", root)
    cfg = load_config("vit_cifar10", ["model.dim=16", "model.heads=2", "model.depth=2", "model.window=3",
                                      "train.epochs=2", "data.val_size=15", "data.batch_size=10",
                                      "tracking.progress=off", "tracking.tensorboard=false"])
    assert cfg.optim.name == "adamw" and cfg.model.patch_size == 4
    run = run_experiment(cfg, tmp_path / "runs", root)
    res = json.loads(run.results.read_text())
    assert res["model"] == "vit" and res["epochs_run"] == 2 and sum(map(sum, res["confusion_matrix"])) == 10
