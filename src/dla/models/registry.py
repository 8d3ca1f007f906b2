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
from dla.registry import Registry


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


def _ensure_builtin() -> None:
    from dla.models import cnn, fastnet, gpt, llama, mlp, resnet, simplenet, vit  # noqa: F401  (registration happens on import)


MODELS: Registry[ModelSpec] = Registry("model", ConfigError, builtin=_ensure_builtin)


def register_model(name: str, config_class: type[ModelConfig], description: str,
                   modality: str = "image") -> Callable:
    """Decorate `build(cfg, inputs) -> nn.Module`.

    modality="image": `inputs` is `ModelInputs`, the module maps (B, C, H, W) images in [0, 1] to (B, K) logits.
    modality="text": `inputs` is `TextInputs`, the module maps token ids (B, T) to next-token logits (B, T, V).
    Each modality has its shared contract tests, which pick a new model up without any edit.
    """

    def decorate(fn: Callable[..., nn.Module]) -> Callable:
        MODELS.add(name, ModelSpec(name, config_class, fn, description, modality))
        return fn

    return decorate


def model_names(modality: str | None = None) -> list[str]:
    """Registered model names, all of them or those of one modality ("image", "text")."""
    return MODELS.names(None if modality is None else lambda s: s.modality == modality)


def model_spec(name: str) -> ModelSpec:
    return MODELS.get(name)


def model_config_class(name: str) -> type[ModelConfig]:
    return model_spec(name).config_class


# Bytes per parameter: float32 weights, and for training their gradients and AdamW's two moments too.
WEIGHT_BYTES, TRAINING_BYTES = 4, 16


def build_model(cfg: ModelConfig, inputs: ModelInputs | TextInputs, training: bool = False) -> nn.Module:
    """The model `cfg` describes, for `inputs`. One that cannot fit in memory (model.width=60000: 3.6 billion
    parameters) is refused with one line before anything is allocated, and an allocation that fails anyway is
    the same one line, not the allocator's traceback."""
    spec = model_spec(cfg.name)
    wanted = TextInputs if spec.modality == "text" else ModelInputs
    if not isinstance(inputs, wanted):
        kind = "a text corpus (task=lm)" if spec.modality == "text" else "images (task=classify)"
        raise ConfigError(f"model.name={cfg.name!r} is a {spec.modality} model; it trains on {kind}")
    per_param = TRAINING_BYTES if training else WEIGHT_BYTES
    n = _count_parameters(spec, cfg, inputs)
    available = available_memory()
    if n is not None and available is not None and n * per_param > available:
        raise ConfigError(_too_big(cfg, n, per_param, available, training))
    try:
        return spec.build(cfg, inputs)
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise ConfigError(_too_big(cfg, n, per_param, available, training, exc)) from None
    except RuntimeError as exc:
        if "alloc" not in str(exc).lower():  # "DefaultCPUAllocator: can't allocate memory": not a bug here
            raise
        raise ConfigError(_too_big(cfg, n, per_param, available, training, exc)) from None


def _count_parameters(spec: ModelSpec, cfg: ModelConfig, inputs: ModelInputs | TextInputs) -> int | None:
    """Parameters of the model, built on the meta device (shapes only, no memory); None if it cannot be built
    there (a data-dependent initialisation). The random streams are left as they were: seeded runs repeat."""
    import random

    import numpy as np

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            return sum(p.numel() for p in spec.build(cfg, inputs).parameters())
    except Exception:  # only an estimate: the real build reports real problems
        return None
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def available_memory() -> int | None:
    """Bytes of memory this process could still get (MemAvailable + free swap); None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.split()[1:2]}
    except (OSError, ValueError, IndexError):
        return None
    return info["MemAvailable"] + info.get("SwapFree", 0) if "MemAvailable" in info else None


def _too_big(cfg: ModelConfig, n: int | None, per_param: int, available: int | None, training: bool,
             exc: BaseException | None = None) -> str:
    size = f"{n:,} parameters need about {n * per_param / 2**30:.1f} GiB" if n is not None else "it needs more memory"
    what = " to train (weights, gradients, optimizer state)" if training else ""
    have = f"the {available / 2**30:.1f} GiB available" if available is not None else "the memory available"
    failed = f" (allocation failed: {' '.join(str(exc).split())[:120]})" if exc is not None else ""
    return (f"model {cfg.name!r} does not fit in memory: {size}{what}, more than {have}{failed}; "
            "choose a smaller model (e.g. a lower model.width or model.depth)")
