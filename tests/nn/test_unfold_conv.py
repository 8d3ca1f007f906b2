"""UnfoldConv2d against nn.Conv2d: values, all three gradients, gradcheck, swapping, state dicts and errors."""

from __future__ import annotations

import ast
import copy
import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from dla.errors import ConfigError, DlaError
from dla.nn import UnfoldConv2d
from dla.nn.unfold_conv import output_size, swap_convs, unfold_conv2d

SOURCE = Path(__file__).resolve().parents[2] / "src" / "dla" / "nn" / "unfold_conv.py"

Pair = int | tuple[int, int]


def _pair_of_layers(c_in: int, c_out: int, kernel: Pair, stride: Pair, padding: Pair, bias: bool,
                    dtype: torch.dtype = torch.float32) -> tuple[nn.Conv2d, UnfoldConv2d]:
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=bias, dtype=dtype)
    ours = UnfoldConv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=bias, dtype=dtype)
    ours.load_state_dict(conv.state_dict())
    return conv, ours


def _assert_same(conv: nn.Module, ours: nn.Module, x: torch.Tensor, **tol: float) -> None:
    """Same output, and the same gradients for the input and every parameter, for a random upstream gradient."""
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref, y_ours = conv(x_ref), ours(x_ours)
    torch.testing.assert_close(y_ours, y_ref, **tol)
    g = torch.randn_like(y_ref)
    grads_ref = torch.autograd.grad(y_ref, [x_ref, *(p for p in conv.parameters() if p.requires_grad)], g)
    grads_ours = torch.autograd.grad(y_ours, [x_ours, *(p for p in ours.parameters() if p.requires_grad)], g)
    names = ["input", *(name for name, p in ours.named_parameters() if p.requires_grad)]
    assert len(grads_ours) == len(grads_ref) == len(names)
    for name, a, b in zip(names, grads_ours, grads_ref, strict=True):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f"{name} gradient: {m}")


# --------------------------------------------------------------------------------------------------
# Values and gradients equal nn.Conv2d's


KERNELS: list[Pair] = [1, 2, 3, 5, (2, 3), (3, 1)]
STRIDES: list[Pair] = [1, 2, 3, (1, 2)]
PADDINGS: list[Pair] = [0, 1, 2, (0, 1), (2, 1)]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(("kernel", "stride", "padding"), list(itertools.product(KERNELS, STRIDES, PADDINGS)))
def test_matches_conv2d_over_geometry(kernel: Pair, stride: Pair, padding: Pair, bias: bool) -> None:
    # A 9x11 input: most strides do not divide H + 2P - K, so some pixels are in no window (zero gradient).
    torch.manual_seed(0)
    conv, ours = _pair_of_layers(3, 4, kernel, stride, padding, bias)
    _assert_same(conv, ours, torch.randn(2, 3, 9, 11))


@pytest.mark.parametrize(("batch", "c_in", "c_out", "h", "w", "kernel", "stride", "padding"), [
    (1, 1, 1, 5, 5, 3, 1, 1),        # batch 1, one channel
    (1, 3, 8, 7, 4, 3, 2, 1),        # batch 1, non-square input
    (4, 16, 16, 12, 12, 3, 1, 1),    # a ResNet-style 3x3 conv
    (3, 8, 16, 10, 10, 3, 2, 1),     # downsampling conv
    (2, 8, 4, 6, 6, 1, 2, 0),        # 1x1 projection shortcut
    (2, 3, 5, 16, 12, 5, 3, 2),      # large kernel, stride 3
    (2, 4, 6, 8, 13, (1, 5), 1, (0, 2)),  # 1xK kernel, non-square padding
    (2, 2, 3, 3, 3, 3, 1, 0),        # kernel as large as the input: one output pixel
])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_matches_conv2d_over_shapes(batch: int, c_in: int, c_out: int, h: int, w: int, kernel: Pair, stride: Pair,
                                    padding: Pair, bias: bool, dtype: torch.dtype) -> None:
    # float64: the same numbers to 1e-7 (the algorithm is exact); float32: sums of hundreds of products
    # accumulated in a different order differ in the last bits, so compare at 1e-4.
    torch.manual_seed(1)
    conv, ours = _pair_of_layers(c_in, c_out, kernel, stride, padding, bias, dtype)
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {}
    _assert_same(conv, ours, torch.randn(batch, c_in, h, w, dtype=dtype), **tol)
    assert ours(torch.randn(batch, c_in, h, w, dtype=dtype)).shape[2:] == output_size((h, w), kernel, stride, padding)


def test_unbatched_input_as_conv2d() -> None:
    torch.manual_seed(2)
    conv, ours = _pair_of_layers(3, 4, 3, 2, 1, True)
    x = torch.randn(3, 9, 7)
    y = ours(x)
    assert y.shape == (4, 5, 4)
    torch.testing.assert_close(y, conv(x))


@pytest.mark.parametrize(("kernel", "stride", "padding", "bias"), [
    (3, 1, 1, True),
    (2, 2, 0, True),
    ((3, 2), (2, 1), (1, 0), True),
    (3, 3, 2, False),
])
def test_gradcheck_float64(kernel: Pair, stride: Pair, padding: Pair, bias: bool) -> None:
    torch.manual_seed(3)
    x = torch.randn(2, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    w = torch.randn(3, 2, *k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True) if bias else None
    inputs = (x, w, b) if bias else (x, w)

    def fn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        return unfold_conv2d(x, w, b, stride, padding)

    assert torch.autograd.gradcheck(fn, inputs)
    # The backward is itself built from differentiable ops, so second derivatives work too.
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_needs_input_grad_and_what_is_saved() -> None:
    """Each tensor is saved only when a gradient needs it: x for dW, the weight for dx; never the unfolded x."""
    torch.manual_seed(4)
    layer = UnfoldConv2d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 8, 8)

    def saved_and_grads(x_grad: bool, w_grad: bool) -> tuple[int, list[bool]]:
        layer.zero_grad(set_to_none=True)
        layer.weight.requires_grad_(w_grad)
        xi = x.clone().requires_grad_(x_grad)
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = layer(xi)
        y.sum().backward()
        return sum(saved.values()), [xi.grad is not None, layer.weight.grad is not None, layer.bias.grad is not None]

    x_bytes, w_bytes = x.nbytes, layer.weight.nbytes
    assert saved_and_grads(True, True) == (x_bytes + w_bytes, [True, True, True])
    assert saved_and_grads(False, True) == (x_bytes, [False, True, True])  # first layer: no dx, no weight kept
    assert saved_and_grads(True, False) == (w_bytes, [True, False, True])  # frozen layer: no dW, no x kept


def test_autocast_bf16_backward_runs_in_the_gradient_dtype() -> None:
    # Under autocast the output and its gradient are bf16 while x and W are fp32 (the training loop's CUDA path).
    torch.manual_seed(5)
    conv, ours = _pair_of_layers(8, 8, 3, 1, 1, True)
    x = torch.randn(2, 8, 10, 10)
    results = []
    for layer in (conv, ours):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(xi)
        assert y.dtype == torch.bfloat16
        y.float().square().mean().backward()
        assert xi.grad.dtype == layer.weight.grad.dtype == layer.bias.grad.dtype == torch.float32
        results.append([y.float(), xi.grad, layer.weight.grad, layer.bias.grad])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.05 * b.abs().max().item())


# --------------------------------------------------------------------------------------------------
# nn.Conv2d's interface: init, state dicts, from_conv, swap_convs


def test_same_init_and_state_dict_both_ways() -> None:
    torch.manual_seed(6)
    conv = nn.Conv2d(3, 5, (3, 2), stride=2, padding=1)
    torch.manual_seed(6)
    ours = UnfoldConv2d(3, 5, (3, 2), stride=2, padding=1)
    assert ours.weight.shape == (5, 3, 3, 2) and ours.bias.shape == (5,)
    for a, b in zip(ours.state_dict().values(), conv.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the same draws as nn.Conv2d's init

    x = torch.randn(2, 3, 9, 9)
    fresh_ours = UnfoldConv2d(3, 5, (3, 2), stride=2, padding=1)
    fresh_ours.load_state_dict(conv.state_dict())  # strict: the same keys and shapes
    torch.testing.assert_close(fresh_ours(x), conv(x))
    fresh_conv = nn.Conv2d(3, 5, (3, 2), stride=2, padding=1)
    fresh_conv.load_state_dict(ours.state_dict())
    torch.testing.assert_close(fresh_conv(x), ours(x))

    no_bias = UnfoldConv2d(3, 5, 3, bias=False)
    assert no_bias.bias is None and list(no_bias.state_dict()) == ["weight"]
    nn.Conv2d(3, 5, 3, bias=False).load_state_dict(no_bias.state_dict())


def test_repr_matches_conv2d() -> None:
    for args, kw in [((3, 8, 3), {}), ((3, 8, (1, 3)), {"stride": 2, "padding": (0, 1), "bias": False})]:
        assert repr(UnfoldConv2d(*args, **kw)) == repr(nn.Conv2d(*args, **kw)).replace("Conv2d", "UnfoldConv2d")


def test_string_padding_as_conv2d() -> None:
    torch.manual_seed(7)
    x = torch.randn(2, 3, 7, 6)
    for padding in ("same", "valid"):
        conv = nn.Conv2d(3, 4, (3, 5), padding=padding)
        ours = UnfoldConv2d.from_conv(conv)
        assert ours.padding == ((1, 2) if padding == "same" else (0, 0))
        _assert_same(conv, ours, x)


def _small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.ReLU()),
        nn.Conv2d(8, 6, (1, 3), padding=(0, 1)), nn.ReLU(),
        nn.Conv2d(6, 4, 2, stride=2),
    )


def test_from_conv_copies() -> None:
    torch.manual_seed(8)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1).eval()
    conv.bias.requires_grad_(False)
    ours = UnfoldConv2d.from_conv(conv)
    assert isinstance(ours, UnfoldConv2d) and not ours.training and not ours.bias.requires_grad
    _assert_same(conv, ours, torch.randn(2, 3, 8, 8))
    with torch.no_grad():
        conv.weight.zero_()  # a copy: the original can change without touching it
    assert ours.weight.abs().sum() > 0


def test_swap_convs_same_outputs_parameters_and_rng() -> None:
    torch.manual_seed(9)
    model = _small_cnn()
    reference = copy.deepcopy(model)
    params_before = dict(model.named_parameters())
    rng = torch.get_rng_state()

    assert swap_convs(model) is model
    assert torch.equal(torch.get_rng_state(), rng)  # swapping draws no random numbers
    assert not any(isinstance(m, nn.Conv2d) for m in model.modules())
    assert sum(isinstance(m, UnfoldConv2d) for m in model.modules()) == 4
    # The very same Parameter objects under the same names: optimizers and state dicts carry over.
    assert all(p is params_before[name] for name, p in model.named_parameters())
    assert list(model.state_dict()) == list(reference.state_dict())
    _assert_same(reference, model, torch.randn(2, 3, 12, 10), rtol=1e-5, atol=1e-5)

    single = nn.Conv2d(2, 3, 3)
    swapped = swap_convs(single)
    assert isinstance(swapped, UnfoldConv2d) and swapped.weight is single.weight


def test_swap_convs_refuses_unsupported_without_changing_anything() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3, dilation=2))
    with pytest.raises(ConfigError, match=r"dilation=.*keep nn\.Conv2d"):
        swap_convs(model)
    assert all(type(m) is nn.Conv2d for m in model)  # validated first, so nothing was swapped


def test_registry_cnn_with_unfold_convs() -> None:
    from dla.models import ModelInputs, build_model
    from dla.models.cnn import CNNConfig

    inputs = ModelInputs((3, 16, 16), 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    models = {}
    for impl in ("conv", "unfold"):
        torch.manual_seed(10)
        models[impl] = build_model(CNNConfig(depth=5, width=4, stages=2, conv_impl=impl), inputs).eval()
    assert not any(isinstance(m, nn.Conv2d) for m in models["unfold"].modules())
    for a, b in zip(models["unfold"].state_dict().values(), models["conv"].state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    _assert_same(models["conv"], models["unfold"], torch.rand(2, 3, 16, 16), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# User mistakes: one ConfigError naming the value and the fix


ERRORS: list[tuple[str, Callable[[], object], str]] = [
    ("kernel_too_large", lambda: UnfoldConv2d(3, 4, 5)(torch.rand(1, 3, 3, 4)),
     r"kernel 5x5 is larger than the 3x4 input padded by 0 \(3x4\); use a smaller kernel_size"),
    ("kernel_too_large_padded", lambda: UnfoldConv2d(3, 4, (1, 7), padding=1)(torch.rand(1, 3, 3, 4)),
     r"larger than the 3x4 input padded by 1 \(5x6\)"),
    ("stride_zero", lambda: UnfoldConv2d(3, 4, 3, stride=0), r"stride=0 must be >= 1; use e.g. stride=1"),
    ("stride_negative_pair", lambda: UnfoldConv2d(3, 4, 3, stride=(1, -2)), r"stride=\(1, -2\) must be >= 1"),
    ("stride_functional", lambda: unfold_conv2d(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 3, 3), stride=0),
     r"stride=0 must be >= 1"),
    ("padding_negative", lambda: UnfoldConv2d(3, 4, 3, padding=-1), r"padding=-1 must be >= 0"),
    ("padding_unknown_string", lambda: UnfoldConv2d(3, 4, 3, padding="full"), r"padding='full' is not supported"),
    ("same_strided", lambda: UnfoldConv2d(3, 4, 3, stride=2, padding="same"), r"padding='same' needs stride=1"),
    ("same_even_kernel", lambda: UnfoldConv2d(3, 4, 2, padding="same"), r"even kernel 2x2"),
    ("kernel_zero", lambda: UnfoldConv2d(3, 4, 0), r"kernel_size=0 must be >= 1"),
    ("kernel_bad_type", lambda: UnfoldConv2d(3, 4, (3,)), r"kernel_size=\(3,\) must be an int or a pair of ints"),
    ("kernel_float", lambda: UnfoldConv2d(3, 4, 2.5), r"kernel_size=2.5 must be an int or a pair"),
    ("in_channels_zero", lambda: UnfoldConv2d(0, 4, 3), r"in_channels=0 must be a positive int"),
    ("out_channels_negative", lambda: UnfoldConv2d(3, -1, 3), r"out_channels=-1 must be a positive int"),
    ("channel_mismatch", lambda: UnfoldConv2d(3, 4, 3)(torch.rand(2, 1, 8, 8)),
     r"in_channels=3\) got an input of shape \(2, 1, 8, 8\) with 1 channels; pass 3-channel input or build the "
     r"layer with in_channels=1"),
    ("input_2d", lambda: UnfoldConv2d(3, 4, 3)(torch.rand(8, 8)), r"expects input of shape \(B, C, H, W\)"),
    ("from_conv_dilation", lambda: UnfoldConv2d.from_conv(nn.Conv2d(3, 4, 3, dilation=2)),
     r"dilation=\(2, 2\) \(needs \(1, 1\)\)"),
    ("from_conv_groups", lambda: UnfoldConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2)), r"groups=2 \(needs 1\)"),
    ("from_conv_padding_mode", lambda: UnfoldConv2d.from_conv(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")),
     r"padding_mode='reflect' \(needs 'zeros'\)"),
    ("from_conv_same_even", lambda: UnfoldConv2d.from_conv(nn.Conv2d(3, 4, 4, padding="same")), r"even kernel 4x4"),
    ("from_conv_not_conv", lambda: UnfoldConv2d.from_conv(nn.Linear(3, 4)), r"needs an nn.Conv2d, got Linear"),
]


@pytest.mark.parametrize(("make", "phrase"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_user_mistakes_raise_config_error(make: Callable[[], object], phrase: str) -> None:
    with pytest.raises(ConfigError, match=phrase) as info:
        make()
    assert isinstance(info.value, DlaError)
    assert "\n" not in str(info.value)  # one line, for the CLI


def test_from_conv_refuses_a_subclass_with_its_own_forward() -> None:
    class ScaledConv(nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    with pytest.raises(ConfigError, match=r"ScaledConv overrides nn\.Conv2d's forward"):
        UnfoldConv2d.from_conv(ScaledConv(3, 4, 3))


# --------------------------------------------------------------------------------------------------
# No convolution routine, neither in the source nor among the ops that run


CONV_NAMES = ("conv1d", "conv2d", "conv3d", "conv_transpose", "convolution", "conv_tbc", "_conv_forward")


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def test_source_calls_no_convolution() -> None:
    tree = ast.parse(SOURCE.read_text())
    called = {_dotted(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    # Our own names (unfold_conv2d, UnfoldConv2dFunction.apply) are the only calls allowed to say "conv".
    others = {n for n in called if not n.lower().replace("_", "").startswith("unfoldconv2d")}
    bad = {n for n in others if any(c in n.lower() for c in CONV_NAMES)}
    bad |= {n for n in others if n.endswith(("Conv2d", "ConvTranspose2d"))}  # building an nn.Conv2d
    assert not bad, f"convolution calls in {SOURCE.name}: {sorted(bad)}"
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom | ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if "grad" in m or any(c in m for c in CONV_NAMES)}, imported
    assert "F.unfold" in SOURCE.read_text() and "F.fold" in SOURCE.read_text()


def _aten_ops(layer: nn.Module, x: torch.Tensor) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        y = layer(x)
        y.backward(torch.ones_like(y))
    return {e.name for e in prof.events()}


def test_no_convolution_op_runs() -> None:
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    conv, ours = _pair_of_layers(3, 4, 3, 1, 1, True)
    assert any("convolution" in op for op in _aten_ops(conv, x))  # the profiler does see them
    ops = _aten_ops(ours, x)
    assert {"aten::im2col", "aten::col2im"} <= ops
    assert not [op for op in ops if op.startswith("aten::") and "conv" in op], sorted(ops)

