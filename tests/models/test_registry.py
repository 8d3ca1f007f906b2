"""Every registered model, built from its default config, honours the model contract.

A new `@register_model` enrols itself here: no edit to this file is needed.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dla.config import ModelConfig
from dla.models import ModelInputs, build_model, model_config_class, model_names
from dla.nn import Normalize

SHAPES = [
    ModelInputs((1, 28, 28), 10, (0.1307,), (0.3081,)),
    ModelInputs((3, 32, 32), 100, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
]


@pytest.mark.parametrize("name", model_names("image"))
@pytest.mark.parametrize("inputs", SHAPES, ids=["grey28", "colour32x100"])
def test_model_contract(name: str, inputs: ModelInputs) -> None:
    cfg = model_config_class(name)()
    assert isinstance(cfg, ModelConfig) and cfg.name == name
    for f in dataclasses.fields(cfg):
        assert f.metadata.get("help"), f"{name}.{f.name} has no help text"
    torch.manual_seed(0)
    model = build_model(cfg, inputs)
    # Normalisation lives inside the model: inputs are [0, 1] pixels.
    assert any(isinstance(m, Normalize) for m in model.modules())
    x = torch.rand(4, *inputs.input_shape)
    logits = model(x)
    assert logits.shape == (4, inputs.num_classes)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # Eval mode makes sample i independent of the rest of the batch (no BatchNorm batch statistics).
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:1], model(x[:1]), rtol=1e-4, atol=1e-5)
        # The feature-space OOD detectors read `penultimate(x)` (B, D) and rebuild the logits with `head`.
        f = model.penultimate(x)
        assert f.ndim == 2 and f.shape[0] == 4 and isinstance(model.head, torch.nn.Linear)
        assert model.head.in_features == f.shape[1]
        torch.testing.assert_close(model.head(f), model(x), rtol=1e-4, atol=1e-5)
    # The weights load into a fresh instance and reproduce the outputs.
    fresh = build_model(cfg, inputs).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))


def test_mlp_residual_and_depth() -> None:
    from dla.models.mlp import MLPConfig

    inputs = SHAPES[0]
    plain = build_model(MLPConfig(width=16, depth=5), inputs)
    res = build_model(MLPConfig(width=16, depth=5, residual=True), inputs)
    assert len(plain.blocks) == 5
    assert [b.residual for b in res.blocks] == [False, True, True, True, True]
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in plain.modules())
    assert n_linear == 6  # 5 hidden + head
    # Parameter count: 784*16+16 + 4*(16*16+16) + 16*10+10
    assert sum(p.numel() for p in plain.parameters()) == 784 * 16 + 16 + 4 * (16 * 16 + 16) + 16 * 10 + 10


@pytest.mark.parametrize("name", model_names("image"))
def test_explanation_layer_contract(name: str) -> None:
    """Grad-CAM's default layer of every model is past its input stem and gives a (B, H, W) map, or the model is
    refused with one line (an MLP has no conv maps)."""
    from dla.explain import ExplainError, default_layer, grad_cam
    from dla.explain.base import CONV_TYPES

    inputs = SHAPES[1]
    torch.manual_seed(0)
    model = build_model(model_config_class(name)(), inputs).eval()
    try:
        layer = default_layer(model)
    except ExplainError as err:
        assert "has no conv layer" in str(err) and not any(isinstance(m, CONV_TYPES) for m in model.modules())
        return
    convs = [n for n, m in model.named_modules() if isinstance(m, CONV_TYPES)]
    inside = [n for n in convs if n == layer or n.startswith(f"{layer}.")]  # the convs the layer's output follows
    assert inside != convs[:1], f"the default layer {layer!r} is the input stem {convs[0]!r}"
    x = torch.rand(2, *inputs.input_shape, generator=torch.Generator().manual_seed(0))
    maps, raw = grad_cam(model, x, raw=True)
    # (an untrained net's map can be blank: zero-initialised heads, all-negative evidence; shapes are the contract)
    assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all()
    assert raw.shape[0] == 2 and raw.ndim == 3 and torch.isfinite(raw).all()
