"""Grad-CAM on a Vision Transformer: its declared layer (the last block's tokens), the tokens -> maps reshape,
and one clear line for a model whose only conv is its input stem."""

from __future__ import annotations

import pytest
import torch

from dla.explain import ExplainError, default_layer, explain, grad_cam
from dla.models import ModelInputs, build_model
from dla.models.vit import ViT, ViTConfig

INPUTS = ModelInputs((3, 16, 16), 5, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def tiny_vit(pool: str = "cls") -> ViT:
    torch.manual_seed(0)
    return build_model(ViTConfig(patch_size=4, dim=8, depth=2, heads=2, pool=pool), INPUTS).eval()


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_the_vit_declares_its_last_block_and_its_maps_follow_the_patch_grid(pool: str) -> None:
    model = tiny_vit(pool)
    assert default_layer(model) == "blocks.1.ln1"
    tokens = torch.arange(2 * (16 + (pool == "cls")) * 8.0).view(2, -1, 8)  # (B, T, D)
    maps = model.tokens_to_maps(tokens)  # (B, D, 4, 4)
    patches = tokens[:, 1:] if pool == "cls" else tokens
    assert maps.shape == (2, 8, 4, 4)
    torch.testing.assert_close(maps[:, :, 1, 2], patches[:, 1 * 4 + 2])  # row-major: patch (1, 2) is token 6


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "scorecam"])
def test_layer_methods_on_a_vit_read_tokens_and_are_not_blank(method: str) -> None:
    model = tiny_vit()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    maps, raw = explain(model, x, method, raw=True)
    assert raw.shape == (3, 4, 4) and maps.shape == (3, 16, 16)  # one value per patch
    assert (raw.abs().amax(dim=(1, 2)) > 0).all() and (maps.amax(dim=(1, 2)) == 1).all()
    _, other = explain(model, x, method, layer="blocks.0", raw=True)  # any token layer by name, the same reshape
    assert other.shape == (3, 4, 4) and not torch.allclose(other, raw)


class Undeclared(ViT):
    explain_layer = None  # type: ignore[assignment]  # a transformer that declares nothing


def test_a_model_whose_default_layer_would_be_its_stem_gets_one_line() -> None:
    model = Undeclared(ViTConfig(patch_size=4, dim=8, depth=1, heads=2), INPUTS).eval()
    with pytest.raises(ExplainError) as err:
        grad_cam(model, torch.rand(1, 3, 16, 16))
    msg = str(err.value)
    assert "\n" not in msg and "only conv layer 'patch_embed' is its input stem" in msg
    assert "declare explain_layer" in msg and "layer=NAME" in msg
