"""The template every explanation method follows (pytorch-grad-cam's base_cam.py, reduced to one override).

A method is a small `Explainer` subclass that overrides `layer_map(x, target) -> (B, h, w)`: the class
evidence at the resolution of the layer it looks at (the last conv maps for CAM, any layer for Grad-CAM, the
input for saliency). Everything else is shared and done once here:

- the model runs in eval mode (BatchNorm running statistics, no dropout), so the map of sample i does not
  depend on the other samples of the batch; each module's mode and each parameter's `requires_grad` are
  restored afterwards, and parameters are frozen while explaining, so no `.grad` is left on them;
- `target=None` explains the predicted class; an int explains that class for every sample; a (B,) tensor or
  list names one class per sample; out-of-range classes are a one-line `ExplainError`. The prediction costs one
  no-grad forward pass; a given target costs none for a method with `scores_checked = True` (it runs the model
  itself and reads the scores through `selected_scores`, which checks the range), one otherwise;
- the layer map is rectified (ReLU: only evidence *for* the class), upsampled to the input's H x W
  (bilinear, align_corners=False, as captum's `LayerAttribution.interpolate`) and min-max normalised per
  sample to [0, 1] for display;
- forward hooks live only inside a `capture` context manager: released after every call, errors included;
- the caller's `x` is never mutated and never receives a gradient.

Return convention, the same for every method: `maps` (B, H, W), or `(maps, raw)` with `raw=True`, where
`raw` (B, h, w) is the un-rectified, un-normalised layer map (signed for CAM and Grad-CAM, so negative
evidence stays visible and the values can be compared across samples and methods).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from dla.errors import DlaError
from dla.nn import UnfoldConv2d
from dla.nn.modes import eval_frozen
from dla.registry import Registry

Target = int | Sequence[int] | torch.Tensor | None


class ExplainError(DlaError):
    """A bad explanation request: unknown method or layer, target out of range, a model the method cannot read."""


class Explainer:
    """Subclass, override `layer_map`, enrol with `@register_method`; options are `__init__` keywords, checked
    there, before any work."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # True: `layer_map` runs the model and reads the target's scores through `selected_scores` (or calls
    # `check_range`) itself, so a given target needs no separate forward pass to check its range (the built-in
    # methods). False, the safe default: the template checks it on a no-grad forward pass first.
    scores_checked: ClassVar[bool] = False

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def layer_map(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [0, 1], (B,) class indices -> (B, h, w) signed class evidence. With
        `scores_checked`, a given target's range is not yet checked: read the scores with `selected_scores`.

        Runs with the model in eval mode, parameters frozen and autograd enabled; `x` is detached and must
        not be modified in place.
        """
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, target: Target = None, raw: bool = False
                 ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = check_images(x)
        t = None if target is None else target_tensor(target, x.shape[0], x.device)  # (B,), range not yet checked
        with eval_frozen(self.model):
            if t is None or not self.scores_checked:
                with torch.no_grad():
                    logits = class_scores(self.model, x)  # (B, K)
                t = logits.argmax(dim=1) if t is None else check_range(t, logits.shape[1])  # (B,)
            with torch.enable_grad():
                layer = self.layer_map(x, t).detach()  # (B, h, w)
        if layer.ndim != 3 or layer.shape[0] != x.shape[0]:
            raise ExplainError(f"method {self.name!r} produced a map of shape {tuple(layer.shape)} for "
                               f"{x.shape[0]} images; it must be (B, h, w)")
        maps = normalise(upsample(F.relu(layer), x.shape[-2:]))  # (B, H, W) in [0, 1]
        return (maps, layer) if raw else maps


# ---- the shared steps ----------------------------------------------------------------------------------------


def check_images(x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ExplainError(f"x must be a batch of images (B, C, H, W) in [0, 1]; got {got}")
    if not x.is_floating_point():
        raise ExplainError(f"x must be a floating-point tensor in [0, 1]; got {x.dtype}: convert with x.float() / 255")
    return x.detach()  # never backpropagate into, or accumulate a gradient on, the caller's tensor


def class_scores(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits (B, K): the unnormalised class scores the papers differentiate, not the softmax."""
    logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ExplainError(f"explanations need a classifier returning logits (B, K); the model returned {got}")
    return logits


def target_tensor(target: Target, b: int, device: torch.device) -> torch.Tensor:
    """An int, or a (B,) list/tensor of ints, as a (B,) long tensor on `device`; the range is `check_range`'s."""
    if isinstance(target, bool) or target is None:
        raise ExplainError(f"target must be a class index, a (B,) list/tensor of them, or None; got {target!r}")
    if isinstance(target, int):
        return torch.full((b,), target, dtype=torch.long, device=device)
    try:
        t = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError):
        raise ExplainError(f"target must be a class index, a (B,) list/tensor of them, or None; "
                           f"got {target!r:.80}") from None
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ExplainError(f"target must hold integer class indices; got dtype {t.dtype}")
    if t.ndim == 0:
        t = t.expand(b)
    if t.shape != (b,):
        raise ExplainError(f"target must be an int or have one class per image, shape ({b},); "
                           f"got shape {tuple(t.shape)}")
    return t.to(device=device, dtype=torch.long)


def check_range(target: torch.Tensor, k: int) -> torch.Tensor:
    """`target` (B,) itself, once every class is in 0..k-1; else a one-line ExplainError."""
    bad = target[(target < 0) | (target >= k)]
    if bad.numel():
        raise ExplainError(f"target class {int(bad[0])} is out of range: the model has {k} classes (0 to {k - 1})")
    return target


def selected_scores(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of each sample's target logit. In eval mode samples are independent, so the gradient
    of this sum w.r.t. any activation is, row by row, each sample's own gradient. Checks the target's range."""
    return logits.gather(1, check_range(target, logits.shape[1]).view(-1, 1)).sum()


def upsample(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:  # (B, h, w) -> (B, H, W)
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)


def normalise(maps: torch.Tensor) -> torch.Tensor:  # (B, H, W) -> (B, H, W) in [0, 1], per sample
    lo = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - lo
    # A flat map (no evidence anywhere, e.g. CAM after ReLU of an all-negative map) is all zeros, not NaN.
    return torch.where(span > 0, (maps - lo) / span.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))


@contextmanager
def capture(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect `module`'s outputs during the forward passes inside the block; the hook is removed on exit."""
    outputs: list[torch.Tensor] = []

    def hook(_m: nn.Module, _inputs: Any, output: Any) -> None:
        outputs.append(output)

    handle = module.register_forward_hook(hook)
    try:
        yield outputs
    finally:
        handle.remove()


# ---- layers by name ------------------------------------------------------------------------------------------

CONV_TYPES = (nn.Conv2d, UnfoldConv2d)
SIDE_BRANCHES = ("shortcut", "downsample")  # dla's and torchvision's names for residual projection convs


def default_layer(model: nn.Module) -> str:
    """The layer a model declares as `explain_layer` (a transformer's tokens, see `layer_maps`), else the block
    that holds the last conv layer (not counting 1x1 projection shortcuts), or that conv itself when it sits
    directly in the model.

    Grad-CAM's "last convolutional layer" means the last rectified conv feature maps. The conv module's own
    output comes before its BatchNorm, ReLU and residual addition, where a weighted sum is often negative
    everywhere and the map is blank; its block's output is what the head sees (for a GAP + linear network,
    exactly CAM's features), as pytorch-grad-cam's `model.layer4[-1]` convention takes it. A residual block
    registers its projection shortcut after its second conv, but the shortcut is a side branch.

    A model whose only conv is its input stem (a patch embedding followed by attention or MLP layers) would get
    a map of the stem's edges, not of the class evidence: that is a one-line ExplainError, not a silent map.
    """
    declared = getattr(model, "explain_layer", None)
    if declared is not None:
        return declared
    convs = [name for name, m in model.named_modules() if isinstance(m, CONV_TYPES)]
    main = [name for name in convs if not set(name.split(".")) & set(SIDE_BRANCHES)]
    if not convs:
        raise ExplainError(f"{type(model).__name__} has no conv layer (nn.Conv2d or UnfoldConv2d) for Grad-CAM's "
                           f"default; pass layer=NAME of a layer with (B, C, h, w) output; "
                           f"layers: {', '.join(layer_names(model)) or 'none'}")
    last = (main or convs)[-1]
    linears = sum(isinstance(m, nn.Linear) for m in model.modules())
    if len(main or convs) == 1 and linears > 1:  # one conv, then more learnt layers than a classifier head
        raise ExplainError(f"{type(model).__name__}'s only conv layer {last!r} is its input stem ({linears} linear "
                           f"layers follow): Grad-CAM there maps the input, not the class evidence; the model must "
                           f"declare explain_layer (and tokens_to_maps for (B, N, C) tokens), or pass layer=NAME")
    return last.rsplit(".", 1)[0] if "." in last else last


def layer_maps(model: nn.Module, name: str, acts: Any) -> torch.Tensor:
    """A layer's output as feature maps (B, C, h, w): as it is, or a transformer's tokens (B, N, C) through the
    model's own `tokens_to_maps` (which knows its class token and patch grid)."""
    to_maps = getattr(model, "tokens_to_maps", None)
    if isinstance(acts, torch.Tensor) and acts.ndim == 3 and callable(to_maps):
        acts = to_maps(acts)  # (B, N, C) -> (B, C, h, w)
    if not isinstance(acts, torch.Tensor) or acts.ndim != 4:
        got = tuple(acts.shape) if isinstance(acts, torch.Tensor) else type(acts).__name__
        raise ExplainError(f"layer {name!r} outputs {got}, not a feature map (B, C, h, w) or tokens (B, N, C) of a "
                           "model with tokens_to_maps; pick a conv layer or block, e.g. the default (layer=None)")
    return acts


def layer_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def find_layer(model: nn.Module, layer: str | nn.Module | None) -> tuple[str, nn.Module]:
    """(name, module) for a layer given by name, by module, or None (the default: `default_layer`)."""
    modules = dict(model.named_modules())
    if layer is None:
        layer = default_layer(model)
    if isinstance(layer, nn.Module):
        name = next((n for n, m in modules.items() if m is layer), None)
        if name is None:
            raise ExplainError(f"the module {type(layer).__name__} passed as layer is not part of this model; "
                               "pass one of its own modules or a name from model.named_modules()")
        return name, layer
    if not isinstance(layer, str) or layer not in modules or not layer:
        convs = [n for n, m in modules.items() if isinstance(m, CONV_TYPES)]
        raise ExplainError(f"unknown layer {layer!r}; conv layers: {', '.join(convs) or 'none'}; "
                           f"all layers: {', '.join(layer_names(model))}")
    return layer, modules[layer]


# ---- the registry --------------------------------------------------------------------------------------------

# Registration order (the order of the grids' columns): the package's __init__ imports every built-in method
# before anyone can reach this module.
METHODS: Registry[type[Explainer]] = Registry("explanation method", ExplainError, ordered=True)


def register_method(name: str, description: str) -> Callable[[type[Explainer]], type[Explainer]]:
    """Decorate an `Explainer` subclass: `dla explain --method NAME`, `explain(..., method=NAME)` and the shared
    contract tests (tests/explain/test_contract.py) pick it up without further edits."""

    def decorate(cls: type[Explainer]) -> type[Explainer]:
        METHODS.add(name, cls)
        cls.name, cls.description = name, description
        return cls

    return decorate


def method_names() -> list[str]:
    return METHODS.names()


def method_class(name: str) -> type[Explainer]:
    return METHODS.get(name)


def explain(model: nn.Module, x: torch.Tensor, method: str, target: Target = None, *, raw: bool = False,
            **options: Any) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Any registered method by name: maps (B, H, W) in [0, 1], or (maps, raw layer maps (B, h, w)) when raw."""
    cls = method_class(method)
    known = list(inspect.signature(cls.__init__).parameters)[2:]  # after (self, model)
    for key in options:
        if key not in known:
            raise ExplainError(f"method {method!r} has no option {key!r}; its options: {', '.join(known) or 'none'}")
    return cls(model, **options)(x, target, raw)
