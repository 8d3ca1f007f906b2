"""One decorator enrols a model (timm-style): its config dataclass, its builder, its description.

A registered model is listed by `dla list --models`, accepted as `model.name`, validated field by field
from the YAML, and picked up by the shared model tests (tests/models/test_registry.py) without any edit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dla.config import ModelConfig
from dla.errors import ConfigError


@dataclass(frozen=True)
class ModelInputs:
    """What the data tells a model builder."""

    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # Training images (N, C, H, W) uint8 for data-dependent initialisation (fastnet's whitening layer); None
    # when the weights will come from a checkpoint anyway (a restored run).
    sample: torch.Tensor | None = None


@dataclass(frozen=True)
class TextInputs:
    """What a text corpus tells a language-model builder."""

    vocab_size: int
    block_size: int  # the longest sequence the model will see


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config_class: type[ModelConfig]
    build: Callable[..., nn.Module]
    description: str
    modality: str = "image"  # image models take (B, C, H, W) in [0, 1]; text models take token ids (B, T)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, config_class: type[ModelConfig], description: str,
                   modality: str = "image") -> Callable:
    """Decorate `build(cfg, inputs) -> nn.Module`.

    modality="image": `inputs` is `ModelInputs`, the module maps (B, C, H, W) images in [0, 1] to (B, K) logits.
    modality="text": `inputs` is `TextInputs`, the module maps token ids (B, T) to next-token logits (B, T, V).
    Each modality has its shared contract tests, which pick a new model up without any edit.
    """

    def decorate(fn: Callable[..., nn.Module]) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelSpec(name, config_class, fn, description, modality)
        return fn

    return decorate


def _ensure_builtin() -> None:
    from dla.models import cnn, fastnet, gpt, mlp, resnet, simplenet, vit  # noqa: F401  (registration happens on import)


def model_names(modality: str | None = None) -> list[str]:
    """Registered model names, all of them or those of one modality ("image", "text")."""
    _ensure_builtin()
    return sorted(n for n, s in _REGISTRY.items() if modality in (None, s.modality))


def model_spec(name: str) -> ModelSpec:
    _ensure_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def model_config_class(name: str) -> type[ModelConfig]:
    return model_spec(name).config_class


def build_model(cfg: ModelConfig, inputs: ModelInputs | TextInputs) -> nn.Module:
    spec = model_spec(cfg.name)
    wanted = TextInputs if spec.modality == "text" else ModelInputs
    if not isinstance(inputs, wanted):
        kind = "a text corpus (task=lm)" if spec.modality == "text" else "images (task=classify)"
        raise ConfigError(f"model.name={cfg.name!r} is a {spec.modality} model; it trains on {kind}")
    return spec.build(cfg, inputs)
