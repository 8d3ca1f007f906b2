"""Many calls leave nothing behind: no module or global hook, no saved-tensor hook, no growing set of live tensors."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_globals

from dla.explain import explain, method_names

from .nets import images, registry_cnn

MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
                "_full_backward_hooks", "_full_backward_pre_hooks")  # the last two: names of older torch versions
GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                "_global_backward_pre_hooks", "_global_forward_hooks_with_kwargs",
                "_global_forward_hooks_always_called")
# torch's private query for the innermost `torch.autograd.graph.saved_tensors_hooks` in force (None when none is).
SAVED_TENSOR_HOOKS = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)


def all_hooks(model: nn.Module) -> int:
    """Every forward / backward hook registry of every module, and torch's global ones (those that exist here)."""
    per_module = sum(len(getattr(m, name, None) or ()) for m in model.modules() for name in MODULE_HOOKS)
    return per_module + sum(len(getattr(module_globals, name, None) or ()) for name in GLOBAL_HOOKS)


def live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))  # type(): no __class__ lookups


@pytest.mark.parametrize("name", method_names())
def test_a_hundred_calls_leave_no_hook_and_no_growing_memory(name: str) -> None:
    model = registry_cnn().train()
    x = images(2)
    before = all_hooks(model)
    assert before == 0
    counts = {}
    for call in range(1, 101):
        target = None if call % 2 else [call % 10, (call + 1) % 10]  # both paths: predicted and given classes
        maps, raw = explain(model, x, name, target, raw=True)
        assert all_hooks(model) == 0, f"call {call}"
        assert SAVED_TENSOR_HOOKS is None or SAVED_TENSOR_HOOKS(False) is None  # no saved-tensor hook left
        if call in (50, 100):
            del maps, raw
            counts[call] = live_tensors()
    assert counts[100] == counts[50], counts  # calls 51..100 leave no tensor alive: nothing accumulates
    assert all(p.grad is None for p in model.parameters()) and all(m.training for m in model.modules())


@pytest.mark.parametrize(("name", "given", "predicted"), [("cam", 2, 3), ("gradcam", 1, 2), ("saliency", 1, 2)])
def test_a_given_target_costs_no_extra_forward_pass(name: str, given: int, predicted: int) -> None:
    """The prediction needs a no-grad pass of its own; a given target is checked on the method's pass (CAM: one
    pass of `features` and one of the model, to verify the head)."""
    model = registry_cnn()
    passes = []
    handle = model.stages.register_forward_pre_hook(lambda _m, _x: passes.append(1))
    try:
        explain(model, images(2), name, [3, 7])
        assert len(passes) == given
        passes.clear()
        explain(model, images(2), name)
        assert len(passes) == predicted
    finally:
        handle.remove()
