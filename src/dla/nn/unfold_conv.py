"""A 2D convolution written with unfold/fold and matrix products, forward and backward.

A convolution is a matrix product in disguise. `F.unfold` (im2col) copies every K_h x K_w patch of the
zero-padded input into one column, so that for one image

    cols   = unfold(x)                  # (C*K_h*K_w, L)   L = H_out * W_out patch positions
    out    = W.view(Co, -1) @ cols + b  # (Co, L)          then viewed as (Co, H_out, W_out)

and the backward pass is the same matrices transposed:

    dW     = dout @ cols^T              # (Co, C*K_h*K_w)  summed over the batch
    dcols  = W.view(Co, -1)^T @ dout    # (C*K_h*K_w, L)
    dx     = fold(dcols)                # (C, H, W)        col2im: overlapping patches add up
    db     = dout summed over (B, H_out, W_out)

No convolution routine is called anywhere in this file; the tests check that against nn.Conv2d's values
and gradients, and with `torch.autograd.gradcheck`.

What is saved for backward, and why
-----------------------------------
We save the input x and the weight, as cuDNN and oneDNN do, and unfold x a second time in backward to get
the weight gradient. The alternative, saving `cols`, skips that second unfold but keeps C*K_h*K_w x L
numbers per image alive until backward: about K_h*K_w / (S_h*S_w) times the size of x (9x for a 3x3,
stride-1 conv). This layer is meant to replace every conv of a network (`model.conv_impl=unfold`), where
all layers' saved tensors are alive at once at the end of the forward pass: 9x on each of a ResNet-56's 55
convs is gigabytes at batch 128. Recomputing costs one more im2col per layer in backward, a memory-bound
copy: about a quarter of our time on a 16->16-channel 28x28 layer, little on channel-heavy small maps
(benchmarks/unfold_conv.py). So autograd keeps exactly what it keeps for nn.Conv2d. `cols` and `dcols` still
exist, one at a time, as transient buffers inside forward and backward: writing and reading them is where
our extra time and peak memory go compared with nn.Conv2d, whose oneDNN (CPU) and cuDNN kernels read the
input directly or through small per-thread patch buffers, never the whole batch's patch matrix.

Each saved tensor is saved only when a gradient needs it: x only for dW, the weight only for dx. A frozen
layer (weight.requires_grad False) keeps only the weight; the first layer of a network (input without
grad) keeps only x.

Mixed precision: under autocast the matrix products run in the autocast dtype, so the incoming gradient
may be bf16/fp16 while x and the weight are fp32. Backward computes in the gradient's dtype (as
autocast's conv does) and autograd casts each returned gradient to its input's dtype.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dla.errors import ConfigError

IntOrPair = int | tuple[int, int]


# --------------------------------------------------------------------------------------------------
# Argument checks: each bad value is one ConfigError naming it and the fix


def _pair(value: Any, name: str) -> tuple[int, int]:
    """An int or a pair of ints as (height, width); anything else is a ConfigError."""
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else None
    if pair is None or len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ConfigError(f"UnfoldConv2d {name}={value!r} must be an int or a pair of ints (height, width), "
                          f"e.g. {name}=3 or {name}=(3, 3)")
    return pair  # type: ignore[return-value]


def _check_positive(value: tuple[int, int], name: str, example: int) -> None:
    if min(value) < 1:
        raise ConfigError(f"UnfoldConv2d {name}={_show(value)} must be >= 1; use e.g. {name}={example}")


def _show(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else str(pair)


def _resolve_padding(padding: IntOrPair | str, kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int]:
    """Zero padding per side as (p_h, p_w). Accepts nn.Conv2d's 'valid' and, for odd kernels, 'same'."""
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        if stride != (1, 1):  # as nn.Conv2d: the output cannot keep the input's size when it is strided
            raise ConfigError(f"UnfoldConv2d padding='same' needs stride=1, got stride={_show(stride)}; "
                              f"use an explicit padding such as padding={kernel[0] // 2}")
        if kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
            raise ConfigError(f"UnfoldConv2d padding='same' with the even kernel {kernel[0]}x{kernel[1]} pads more "
                              f"on the bottom/right than on the top/left, which symmetric padding cannot express; "
                              f"use an odd kernel_size or an explicit padding")
        return ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)
    if isinstance(padding, str):
        raise ConfigError(f"UnfoldConv2d padding={padding!r} is not supported; use an int, a pair, 'valid' or 'same'")
    pad = _pair(padding, "padding")
    if min(pad) < 0:
        raise ConfigError(f"UnfoldConv2d padding={_show(pad)} must be >= 0 (zeros added on each side); "
                          f"use e.g. padding=0, or padding={kernel[0] // 2} to keep the size of a stride-1 output")
    return pad


def output_size(size: tuple[int, int], kernel: IntOrPair, stride: IntOrPair = 1,
                padding: IntOrPair = 0) -> tuple[int, int]:
    """(H_out, W_out) = floor((H + 2P - K) / S) + 1 per dimension, as nn.Conv2d."""
    k, s, p = _pair(kernel, "kernel_size"), _pair(stride, "stride"), _pair(padding, "padding")
    return ((size[0] + 2 * p[0] - k[0]) // s[0] + 1, (size[1] + 2 * p[1] - k[1]) // s[1] + 1)


def _check_input(x: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int]) -> None:
    _, in_ch, kh, kw = weight.shape
    if x.shape[1] != in_ch:
        raise ConfigError(f"UnfoldConv2d(in_channels={in_ch}) got an input of shape {tuple(x.shape)} with "
                          f"{x.shape[1]} channels; pass {in_ch}-channel input or build the layer with "
                          f"in_channels={x.shape[1]}")
    h, w = x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1]
    if kh > h or kw > w:
        raise ConfigError(f"UnfoldConv2d kernel {kh}x{kw} is larger than the {x.shape[2]}x{x.shape[3]} input "
                          f"padded by {_show(padding)} ({h}x{w}); use a smaller kernel_size, more padding or a "
                          f"larger input")


# --------------------------------------------------------------------------------------------------
# The autograd function


class UnfoldConv2dFunction(torch.autograd.Function):
    """out = W @ unfold(x) + b, with the backward pass written out by hand (no convolution routines).

    Call it through `unfold_conv2d`, which checks the arguments first.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
        B, C, H, W = x.shape
        Co, _, kh, kw = weight.shape
        h_out, w_out = output_size((H, W), (kh, kw), stride, padding)

        cols = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # (B, C*kh*kw, L), L = h_out * w_out
        # One matrix product per image, the weight broadcast over the batch as a stride-0 view. (torch.matmul
        # does the same when the weight needs no grad; when it does, matmul copies cols into a transposed
        # layout first, which made the whole layer 2.5x slower.)
        w_batched = weight.reshape(Co, -1).expand(B, -1, -1)  # (B, Co, C*kh*kw), no copy
        out = torch.bmm(w_batched, cols)  # (B, Co, C*kh*kw) @ (B, C*kh*kw, L) -> (B, Co, L)
        if bias is not None:
            out.add_(bias.view(1, Co, 1))  # (B, Co, L) + (1, Co, 1)
        del cols  # transient: freed here, recomputed in backward (see the module docstring)

        # Saved for backward: x only if dW is needed (it is re-unfolded there), the weight only if dx is
        # needed (dcols = W^T @ dout). x is the previous layer's activation and W a parameter, so this keeps
        # nothing nn.Conv2d would not; saving `cols` would have kept C*kh*kw x L more numbers per image.
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctx.save_for_backward(x if need_w else None, weight if need_x else None)
        ctx.geometry = ((H, W), (kh, kw), stride, padding)
        ctx.channels = C
        ctx.has_bias = bias is not None
        return out.view(B, Co, h_out, w_out)  # (B, Co, H_out, W_out)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        (H, W), kernel, stride, padding = ctx.geometry
        B, Co = grad_out.shape[:2]
        g = grad_out.reshape(B, Co, -1)  # (B, Co, L)
        dtype = g.dtype  # under autocast the gradient is bf16/fp16 while x and W stay fp32: compute in its dtype
        grad_x = grad_w = grad_b = None

        if ctx.needs_input_grad[1]:
            cols = F.unfold(x.to(dtype), kernel, padding=padding, stride=stride)  # (B, C*kh*kw, L), recomputed
            # dW = sum over images of dout @ cols^T: (B, Co, L) @ (B, L, C*kh*kw) -> (B, Co, C*kh*kw) -> sum over B
            grad_w = torch.bmm(g, cols.transpose(1, 2)).sum(0).view(Co, ctx.channels, *kernel)  # (Co, C, kh, kw)
            del cols  # free it before dcols, the other big buffer, is made

        if ctx.needs_input_grad[0]:
            w_t = weight.reshape(Co, -1).to(dtype).t().expand(B, -1, -1)  # (B, C*kh*kw, Co), no copy
            grad_cols = torch.bmm(w_t, g)  # (B, C*kh*kw, Co) @ (B, Co, L) -> (B, C*kh*kw, L)
            # col2im: each column's entries go back to the pixels they were copied from, overlaps summed;
            # the padding's positions are dropped, and pixels no window reached (a stride that does not
            # divide H + 2P - K) get zero gradient, as they should.
            grad_x = F.fold(grad_cols, (H, W), kernel, padding=padding, stride=stride)  # (B, C, H, W)

        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(dim=(0, 2, 3))  # (Co,)

        return grad_x, grad_w, grad_b, None, None  # no gradients for stride and padding


def unfold_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  stride: IntOrPair = 1, padding: IntOrPair | str = 0) -> torch.Tensor:
    """F.conv2d's subset (dilation 1, groups 1, zero padding) by unfold/fold. x: (B, C, H, W) or (C, H, W)."""
    s = _pair(stride, "stride")
    _check_positive(s, "stride", 1)
    p = _resolve_padding(padding, (weight.shape[2], weight.shape[3]), s)
    if x.dim() not in (3, 4):
        raise ConfigError(f"UnfoldConv2d expects input of shape (B, C, H, W) or (C, H, W), got {tuple(x.shape)}; "
                          f"reshape it to (batch, channels, height, width)")
    unbatched = x.dim() == 3  # one (C, H, W) image, as nn.Conv2d accepts
    x = x.unsqueeze(0) if unbatched else x
    _check_input(x, weight, p)
    out = UnfoldConv2dFunction.apply(x, weight, bias, s, p)
    return out.squeeze(0) if unbatched else out


# --------------------------------------------------------------------------------------------------
# The module: nn.Conv2d's interface and parameters


class UnfoldConv2d(nn.Module):
    """Drop-in for `nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias)`.

    Same parameter names, shapes and default initialisation, so state dicts load both ways; computed by
    `UnfoldConv2dFunction`. Dilation, groups and non-zero padding modes are not supported.
    """

    # nn.Conv2d's attributes for the features we do not support, fixed, for code that inspects convs.
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    padding_mode: str = "zeros"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
                 padding: IntOrPair | str = 0, bias: bool = True, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"UnfoldConv2d {name}={value!r} must be a positive int, e.g. {name}=16")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        _check_positive(self.kernel_size, "kernel_size", 3)
        self.stride = _pair(stride, "stride")
        _check_positive(self.stride, "stride", 1)
        self.padding = _resolve_padding(padding, self.kernel_size, self.stride)

        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Conv2d's init, draw for draw: the same seed gives the same weights as nn.Conv2d.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        if self.bias is not None:
            fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H_out, W_out)
        return unfold_conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:  # as nn.Conv2d's
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.bias is None:
            s += ", bias=False"
        return s

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> UnfoldConv2d:
        """An UnfoldConv2d computing what `conv` computes, with a copy of its weights (on its device and dtype)."""
        new = _skeleton(cls, conv)
        new.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=conv.weight.requires_grad)
        if conv.bias is not None:
            new.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=conv.bias.requires_grad)
        return new.train(conv.training)


def _skeleton(cls: type[UnfoldConv2d], conv: nn.Conv2d) -> UnfoldConv2d:
    """An UnfoldConv2d with conv's geometry and uninitialised parameters, or a ConfigError naming what differs."""
    name = type(conv).__name__
    if not isinstance(conv, nn.Conv2d):
        raise ConfigError(f"UnfoldConv2d.from_conv needs an nn.Conv2d, got {name}")
    if type(conv).forward is not nn.Conv2d.forward or type(conv)._conv_forward is not nn.Conv2d._conv_forward:
        raise ConfigError(f"{name} overrides nn.Conv2d's forward, so an UnfoldConv2d would not compute the same "
                          f"thing; leave it as it is or give it its own unfold version")
    if isinstance(conv.weight, nn.parameter.UninitializedParameter):
        raise ConfigError(f"{name} has not been initialised yet (lazy module); run one forward pass before swapping")
    unsupported = [f"{attr}={value!r} (needs {need!r})" for attr, value, need in (
        ("dilation", tuple(conv.dilation), (1, 1)), ("groups", conv.groups, 1),
        ("padding_mode", conv.padding_mode, "zeros")) if value != need]
    if unsupported:
        raise ConfigError(f"UnfoldConv2d cannot replace {conv}: {', '.join(unsupported)}; keep nn.Conv2d for it")
    # torch.nn.utils.skip_init builds on the meta device: no initialisation, so no draws from the global RNG
    # (swapping convs must not change the dropout masks or data order that follow).
    return torch.nn.utils.skip_init(cls, conv.in_channels, conv.out_channels, tuple(conv.kernel_size),
                                    stride=tuple(conv.stride), padding=conv.padding if isinstance(conv.padding, str)
                                    else tuple(conv.padding), bias=conv.bias is not None,
                                    device=conv.weight.device, dtype=conv.weight.dtype)


def swap_convs(module: nn.Module) -> nn.Module:
    """Replace every nn.Conv2d in `module` (recursively, in place) by an equivalent UnfoldConv2d.

    The new layers hold the very Parameter objects of the old ones, so the state dict is unchanged and an
    optimizer built before the swap still updates them. Returns `module`, or the replacement when `module`
    is itself an nn.Conv2d. Convs that UnfoldConv2d cannot reproduce raise ConfigError before any change.
    """
    if isinstance(module, nn.Conv2d):
        return _swap_one(module, _skeleton(UnfoldConv2d, module))
    places = [(parent, child_name, child) for parent in module.modules()
              for child_name, child in parent.named_children() if isinstance(child, nn.Conv2d)]
    # Validate every conv before changing any; a conv registered in two places becomes one shared layer.
    new = {id(conv): _skeleton(UnfoldConv2d, conv) for _, _, conv in places}
    for parent, child_name, conv in places:
        setattr(parent, child_name, _swap_one(conv, new[id(conv)]))
    return module


def _swap_one(conv: nn.Conv2d, new: UnfoldConv2d) -> UnfoldConv2d:
    new.weight = conv.weight  # the same Parameter object, not a copy
    new.bias = conv.bias
    return new.train(conv.training)
