"""One decorator enrols a model (timm-style): its config dataclass, its builder, its description.

A registered model is listed by `dla list --models`, accepted as `model.name`, validated field by field
from the YAML, and picked up by the shared model tests (tests/models/test_registry.py) without any edit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config_class: type[ModelConfig]
    build: Callable[[ModelConfig, ModelInputs], nn.Module]
    description: str


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, config_class: type[ModelConfig], description: str) -> Callable:
    """Decorate `build(cfg, inputs) -> nn.Module`; the module takes (B, C, H, W) images in [0, 1]."""

    def decorate(fn: Callable[[ModelConfig, ModelInputs], nn.Module]) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelSpec(name, config_class, fn, description)
        return fn

    return decorate


def _ensure_builtin() -> None:
    from dla.models import cnn, mlp, resnet, simplenet, vit  # noqa: F401  (registration happens on import)


def model_names() -> list[str]:
    _ensure_builtin()
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    _ensure_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def model_config_class(name: str) -> type[ModelConfig]:
    return model_spec(name).config_class


def build_model(cfg: ModelConfig, inputs: ModelInputs) -> nn.Module:
    return model_spec(cfg.name).build(cfg, inputs)
