"""Every registered explanation method honours the shared contract of `dla.explain.base.Explainer`.

A new `@register_method` enrols itself in this matrix: no edit to this file is needed.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_globals

from dla.explain import Explainer, ExplainError, explain, method_names, register_method
from dla.explain import base as base_module
from dla.explain.run import parse_methods

from .nets import images, registry_cnn

METHODS = method_names()


def hook_count(model: nn.Module) -> int:
    per_module = sum(len(d) for m in model.modules() for d in (
        m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks))
    global_hooks = (module_globals._global_forward_hooks, module_globals._global_forward_pre_hooks,
                    module_globals._global_backward_hooks, module_globals._global_backward_pre_hooks)
    return per_module + sum(len(d) for d in global_hooks)


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_the_builtin_methods_are_registered() -> None:
    assert METHODS[:8] == ["cam", "gradcam", "gradcam++", "integrated_gradients", "layercam", "saliency", "scorecam",
                           "smoothgrad"]


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("start", ["train", "eval", "mixed"])
def test_contract(name: str, start: str) -> None:
    model = registry_cnn()
    model.train(start != "eval")
    if start == "mixed":
        model.stem[1].eval()  # a frozen BatchNorm inside a training model
        model.head.bias.requires_grad_(False)  # a frozen parameter
    modes, flags = _modes(model), [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = images(5).requires_grad_(True)  # a caller's tensor that wants gradients must not receive any
    x_before = x.detach().clone()

    maps, raw = explain(model, x, name, raw=True)

    assert maps.shape == (5, 32, 32) and maps.dtype == x.dtype and not maps.requires_grad
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert torch.allclose(maps.amax(dim=(1, 2)), torch.ones(5))  # normalised per sample for display
    assert raw.ndim == 3 and raw.shape[0] == 5 and not raw.requires_grad and torch.isfinite(raw).all()
    assert hook_count(model) == 0
    assert _modes(model) == modes  # every module back in its own mode
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BatchNorm stats untouched
    assert torch.equal(x.detach(), x_before) and x.grad is None
    # Eval mode inside: the same maps again (no dropout, no batch statistics), whatever mode the model was in.
    torch.testing.assert_close(explain(model, x, name), maps, rtol=0, atol=0)


@pytest.mark.parametrize("name", METHODS)
def test_a_sample_map_does_not_depend_on_the_rest_of_the_batch(name: str) -> None:
    model = registry_cnn().train()  # train mode would mix the batch through BatchNorm; eval mode inside must not
    x = images(6, seed=3)
    full = explain(model, x, name)
    alone = torch.cat([explain(model, x[i : i + 1], name) for i in range(len(x))])
    torch.testing.assert_close(alone, full, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(explain(model, x.flip(0), name), full.flip(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", METHODS)
def test_targets_none_int_and_per_sample_agree_and_the_map_follows_the_target(name: str) -> None:
    model = registry_cnn()
    x = images(4, seed=4)
    pred = model(x).argmax(dim=1)
    predicted = explain(model, x, name)
    torch.testing.assert_close(explain(model, x, name, pred), predicted, rtol=0, atol=0)
    torch.testing.assert_close(explain(model, x, name, pred.tolist()), predicted, rtol=0, atol=0)
    torch.testing.assert_close(explain(model, x, name, 2), explain(model, x, name, torch.full((4,), 2)))
    other = (pred + 1) % 10
    changed = explain(model, x, name, other)
    for i in range(4):  # every sample's map moves when its class does
        assert not torch.allclose(changed[i], predicted[i], atol=1e-3), i
    mixed = torch.where(torch.arange(4) % 2 == 0, pred, other)  # per-sample targets: each row its own class
    torch.testing.assert_close(explain(model, x, name, mixed)[1::2], changed[1::2])
    torch.testing.assert_close(explain(model, x, name, mixed)[::2], predicted[::2])


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize(("target", "needle"), [
    (10, "target class 10 is out of range: the model has 10 classes (0 to 9)"),
    (-1, "target class -1 is out of range"),
    ([1, 2], "one class per image, shape (3,)"),
    (torch.tensor([0.5, 1.0, 2.0]), "integer class indices"),
    (True, "class index"),
])
def test_bad_targets_are_one_clear_error_and_leave_nothing_behind(name: str, target: object, needle: str) -> None:
    model = registry_cnn().train()
    with pytest.raises(ExplainError) as err:
        explain(model, images(3), name, target)
    assert needle in str(err.value)
    assert hook_count(model) == 0 and all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", METHODS)
def test_a_failure_inside_the_method_releases_hooks_and_restores_the_model(name: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    model = registry_cnn().train()
    calls = {"n": 0}
    forward = model.stages.forward

    def fail_on_second_pass(x: torch.Tensor) -> torch.Tensor:  # pass 1 picks the target; pass 2 is the method's
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return forward(x)

    monkeypatch.setattr(model.stages, "forward", fail_on_second_pass)
    with pytest.raises(RuntimeError, match="boom"):
        explain(model, images(3), name)
    assert hook_count(model) == 0 and all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters()) and all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("bad", [torch.rand(3, 32, 32), torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "img"])
def test_inputs_must_be_float_image_batches(bad: object) -> None:
    with pytest.raises(ExplainError, match=r"x must be"):
        explain(registry_cnn(), bad, "saliency")  # type: ignore[arg-type]


def test_unknown_methods_and_options_are_named() -> None:
    known = r"cam, gradcam, gradcam\+\+, integrated_gradients, layercam, saliency, scorecam, smoothgrad"
    with pytest.raises(ExplainError, match=f"unknown explanation method 'lime'; known: {known}"):
        explain(registry_cnn(), images(2), "lime")
    with pytest.raises(ExplainError, match="method 'cam' has no option 'layer'; its options: none"):
        explain(registry_cnn(), images(2), "cam", layer="stages")
    with pytest.raises(ExplainError, match="has no option 'sample'; its options: samples, noise, seed"):
        explain(registry_cnn(), images(2), "saliency", sample=3)


def test_a_new_method_is_one_small_class(monkeypatch: pytest.MonkeyPatch) -> None:
    # leave the real registry as it was
    monkeypatch.setattr(base_module.METHODS, "_entries", dict(base_module.METHODS.entries))

    @register_method("input_times_gradient", "x * d score / d x, summed over channels")
    class InputTimesGradient(Explainer):
        def layer_map(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(base_module.selected_scores(self.model(x), target), x)
            return (x * g).sum(dim=1)

    model = registry_cnn()
    maps, raw = explain(model, images(2), "input_times_gradient", raw=True)
    assert maps.shape == (2, 32, 32) and raw.shape == (2, 32, 32) and hook_count(model) == 0
    assert "input_times_gradient" in parse_methods("all")
    with pytest.raises(ValueError, match="registered twice"):
        register_method("cam", "again")(InputTimesGradient)
