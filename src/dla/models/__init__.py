"""The model registry: `@register_model` enrols a model in the CLI, the configs and the shared tests."""

from dla.models.registry import (
    ModelInputs,
    TextInputs,
    build_model,
    model_config_class,
    model_names,
    register_model,
)

__all__ = ["ModelInputs", "TextInputs", "build_model", "model_config_class", "model_names", "register_model"]
