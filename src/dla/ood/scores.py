"""OOD scores of a classifier; one decorator enrols a score (timm-style) in `score`, the CLI and the test matrix.

Every score is higher for inputs that look more in-distribution, so `dla.ood.metrics(id_scores, ood_scores)`
reads any of them the same way. A score function only computes: `fn(model, x, **options) -> (B,)`. The
dispatcher `score` does the rest once for all of them:

- the model runs in eval mode (BatchNorm running statistics, no dropout), so sample i's score does not depend
  on the rest of the batch; each module's mode and each parameter's `requires_grad` are restored afterwards;
- parameters are frozen while scoring, so even a gradient-based score (ODIN) leaves no `.grad` on them;
- the input is never mutated; gradient-free scores run under `torch.no_grad()`;
- `batch_size` splits a large `x` into chunks; the result is a CPU float32 tensor of shape (B,).

Images are (B, C, H, W) in [0, 1]; normalisation is a module inside the model (docs/ARCHITECTURE.md), so ODIN's input
perturbation is in pixel units.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dla.nn.modes import classifier_logits, eval_frozen
from dla.ood.metrics import OODError
from dla.registry import Registry

ScoreFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class ScoreSpec:
    name: str
    fn: ScoreFn
    description: str
    needs_grad: bool  # True: `fn` runs with autograd on (input gradients); False: under torch.no_grad()
    of_logits: ScoreFn | None = None  # a score of the logits alone: `of_logits(logits (B, K), **options) -> (B,)`


SCORES: Registry[ScoreSpec] = Registry("OOD score", OODError)  # built-ins: this module's own decorators


def register_score(name: str, description: str, needs_grad: bool = False) -> Callable[[ScoreFn], ScoreFn]:
    """Decorate `fn(model, x, **options) -> Tensor (B,)`, higher = more in-distribution.

    `fn` may assume the model is in eval mode with frozen parameters and that `x` is a detached floating tensor
    it must not modify; keyword options need defaults (they become `score(..., option=value)`).
    """

    def decorate(fn: ScoreFn) -> ScoreFn:
        SCORES.add(name, ScoreSpec(name, fn, description, needs_grad))
        return fn

    return decorate


def register_logit_score(name: str, description: str) -> Callable[[ScoreFn], ScoreFn]:
    """Decorate `fn(logits (B, K), **options) -> Tensor (B,)`: a score of the classifier's logits alone.

    It is a score like any other (`score(model, x, name)` runs the model, then `fn`), and `score_many` computes
    every such score of a batch from one forward pass.
    """

    def decorate(fn: ScoreFn) -> ScoreFn:
        def on_model(model: nn.Module, x: torch.Tensor, **kw: object) -> torch.Tensor:
            return fn(_logits(model, x), **kw)

        # The option check reads (model, x, options...): fn's options after its logits.
        head = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("model", "x")]
        on_model.__signature__ = inspect.Signature([*head, *list(inspect.signature(fn).parameters.values())[1:]])
        SCORES.add(name, ScoreSpec(name, on_model, description, False, fn))
        return fn

    return decorate


def score_names() -> list[str]:
    return SCORES.names()


def score_spec(name: str) -> ScoreSpec:
    return SCORES.get(name)


def _check_options(spec: ScoreSpec, kw: dict[str, object]) -> None:
    params = list(inspect.signature(spec.fn).parameters.values())[2:]  # after (model, x)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    known = [p.name for p in params]
    for k in kw:
        if k not in known:
            raise OODError(f"score {spec.name!r} has no option {k!r}; its options: {', '.join(known) or 'none'}")


def score(
    model: nn.Module, x: torch.Tensor, method: str = "msp", *, batch_size: int | None = None, **kw: object
) -> torch.Tensor:
    """Per-sample OOD score of `x` under `model` (higher = more in-distribution): a CPU float32 tensor (B,).

    `method` is a registered score (`score_names()`); `**kw` are its options, e.g. `temperature=1000, eps=0.0014`
    for "odin". `batch_size` bounds memory on large inputs and does not change the result. See the module
    docstring for the guarantees (eval mode, restored state, no gradients left behind, input untouched).
    """
    spec = score_spec(method)
    _check_options(spec, kw)
    if not isinstance(x, torch.Tensor) or x.ndim < 1:
        raise OODError(f"x must be a batch tensor (B, ...), e.g. images (B, C, H, W) in [0, 1]; got {x!r:.80}")
    if not x.is_floating_point():
        raise OODError(f"x must be a floating-point tensor in [0, 1]; got {x.dtype}: convert with x.float() / 255")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise OODError(f"batch_size must be a positive integer or None; got {batch_size!r}")
    x = x.detach()  # never backpropagate into, or accumulate a gradient on, the caller's tensor
    if x.shape[0] == 0:
        return torch.empty(0)
    chunks = x.split(batch_size) if batch_size else (x,)
    out = []
    with eval_frozen(model), torch.enable_grad() if spec.needs_grad else torch.no_grad():
        for chunk in chunks:
            s = spec.fn(model, chunk, **kw)
            if not isinstance(s, torch.Tensor) or s.shape != (chunk.shape[0],):
                shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
                raise OODError(f"score {method!r} returned {shape} for a batch of {chunk.shape[0]}; it must be (B,)")
            out.append(s.detach().to("cpu", torch.float32))
    return torch.cat(out)


def score_many(model: nn.Module, x: torch.Tensor, methods: dict[str, dict[str, object]], *,
               batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """`{method: score(model, x, method, batch_size=..., **options)}` for `methods` ({name: options}), equal to
    those calls, with every score of the logits alone (`register_logit_score`) computed from one forward pass
    per chunk instead of one each."""
    specs = {m: score_spec(m) for m in methods}
    for m, spec in specs.items():
        _check_options(spec, methods[m])
    shared = [m for m, spec in specs.items() if spec.of_logits is not None]
    out = {m: score(model, x, m, batch_size=batch_size, **methods[m]) for m in methods if m not in shared}
    if len(shared) < 2:  # nothing to share: the plain path (and its input checks)
        out.update({m: score(model, x, m, batch_size=batch_size, **methods[m]) for m in shared})
        return {m: out[m] for m in methods}
    score(model, x[:0], shared[0])  # the same input checks as `score`, on no images
    parts: dict[str, list[torch.Tensor]] = {m: [] for m in shared}
    with eval_frozen(model), torch.no_grad():
        for chunk in x.detach().split(batch_size) if batch_size else (x.detach(),):
            logits = _logits(model, chunk)  # (B, K): one forward for every shared score
            for m in shared:
                parts[m].append(specs[m].of_logits(logits, **methods[m]).to("cpu", torch.float32))
    out.update({m: torch.cat(p) if p else torch.empty(0) for m, p in parts.items()})
    return {m: out[m] for m in methods}


def score_loader(
    model: nn.Module,
    batches: Iterable[torch.Tensor | Sequence[torch.Tensor]],
    method: str = "msp",
    *,
    device: torch.device | str | None = None,
    batch_size: int | None = None,
    **kw: object,
) -> torch.Tensor:
    """Scores of every sample in `batches`, concatenated in order: a CPU float32 tensor (N,).

    Each batch is images (B, C, H, W) in [0, 1], or a tuple/list whose first item is (a DataLoader's (x, y)).
    Batches are moved to `device`, by default the device of the model's first parameter or buffer.
    """
    spec = score_spec(method)  # fail on a bad name before touching the data
    _check_options(spec, kw)
    if device is None:
        first = next(iter(model.parameters()), None)
        if first is None:
            first = next(iter(model.buffers()), None)
        device = first.device if first is not None else torch.device("cpu")
    out = []
    for batch in batches:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        out.append(score(model, x.to(device), method, batch_size=batch_size, **kw))
    return torch.cat(out) if out else torch.empty(0)


# ---- built-in scores -----------------------------------------------------------------------------------------


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return classifier_logits(model, x, OODError, "these scores")


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise OODError(f"temperature must be > 0; got {temperature!r} (1 is plain softmax, ODIN uses 1000)")


@register_logit_score("msp", "maximum softmax probability (Hendrycks & Gimpel 2017), optionally temperature-scaled")
def msp(logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    _check_temperature(temperature)
    return torch.softmax(logits / temperature, dim=1).amax(dim=1)


@register_logit_score("maxlogit", "largest logit (Hendrycks et al. 2022): not squashed by the softmax normalisation")
def maxlogit(logits: torch.Tensor) -> torch.Tensor:
    return logits.amax(dim=1)


@register_logit_score("energy", "negative free energy T * logsumexp(logits / T) (Liu et al. 2020)")
def energy(logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    # Lies in [maxlogit, maxlogit + T log K]: a soft maximum that, unlike MSP, keeps the logits' scale.
    _check_temperature(temperature)
    return temperature * torch.logsumexp(logits / temperature, dim=1)


@register_score(
    "odin", "MSP at temperature T after a small input step that raises it (Liang et al. 2018)", needs_grad=True
)
def odin(model: nn.Module, x: torch.Tensor, *, temperature: float = 1000.0, eps: float = 0.0014) -> torch.Tensor:
    """max softmax(f(x~) / T) with x~ = clamp(x - eps * sign(-grad_x log max_k softmax(f(x) / T)_k), 0, 1).

    The step raises the predicted class's tempered probability, and raises it more for ID inputs than for OOD
    ones, which widens the gap. `eps` is in pixel units ([0, 1] images; normalisation is inside the model). The
    paper quotes eps for normalised inputs, but its reference code (facebookresearch/odin, calData.py) divides
    the gradient sign by the per-channel std before adding it to the normalised image, which is a step of eps
    in [0, 1] pixel space, so its values (0.0014, or a validation grid 0 ... 0.004) carry over unchanged. Two
    differences from that code: x~ is clamped to the valid image range, and a zero gradient does not move a
    pixel (sign 0, where the code moves it by -eps). `eps=0` skips the step: ODIN is then MSP at temperature T.
    """
    _check_temperature(temperature)
    if eps < 0:
        raise OODError(f"eps must be >= 0 (a pixel-space step size); got {eps!r}")
    if eps > 0:
        x = (x + eps * odin_direction(model, x, temperature)).clamp_(0.0, 1.0)
    with torch.no_grad():
        return torch.softmax(_logits(model, x) / temperature, dim=1).amax(dim=1)


def odin_direction(model: nn.Module, x: torch.Tensor, temperature: float) -> torch.Tensor:
    """sign(grad_x log max_k softmax(f(x) / T)_k), like x: the direction of ODIN's input step (model in eval mode).

    The step for every eps at one temperature is this one direction times eps, which `dla.ood.odin_grid` uses to
    score a whole eps axis with one backward pass per temperature.
    """
    with torch.enable_grad():
        x_req = x.detach().clone().requires_grad_(True)
        log_msp = torch.log_softmax(_logits(model, x_req) / temperature, dim=1).amax(dim=1)
        # Eval mode keeps samples independent, so the gradient of the sum is each sample's own gradient.
        (grad,) = torch.autograd.grad(log_msp.sum(), x_req)
    return grad.sign()
