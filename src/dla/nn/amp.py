"""Opt-in bf16 evaluation: a trained model whose forward passes run under `torch.autocast(dtype=bfloat16)`.

`dla attack --amp bf16` and `dla ood --amp bf16` evaluate through `bf16_eval(model)`: the convolutions and matrix
products run in bf16 (on a CPU with AVX512-BF16 / AMX, or a GPU), the logits come back as float32 so losses and
softmax scores do not round into ties. It is faster and not exact: bf16 keeps 8 bits of mantissa, so a robust
accuracy or an AUROC can move. It is never the default; where it is used, results.json and every table caption
say so.
"""

from __future__ import annotations

import torch
from torch import nn

from dla.errors import ConfigError

AMP_CHOICES = ("off", "bf16")


def check_amp(amp: str, option: str = "--amp") -> str:
    if amp not in AMP_CHOICES:
        raise ConfigError(f"{option} must be one of {', '.join(AMP_CHOICES)}; got {amp!r} (off = exact float32)")
    return amp


class Bf16Eval(nn.Module):
    """`model` with its forward (and `penultimate`, when it has one) under bf16 autocast; float32 out.

    The wrapped model's parameters are its own (no copy), so modes and `requires_grad` set on the wrapper reach
    them. Its linear `head`, when it has one, stays reachable for the feature-space OOD detectors.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        if isinstance(getattr(model, "head", None), nn.Linear):
            self.head = model.head
        if callable(getattr(model, "penultimate", None)):
            self.penultimate = self._penultimate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.model(x).float()

    def _penultimate(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.model.penultimate(x).float()


def with_amp(model: nn.Module, amp: str) -> nn.Module:
    """The model itself for amp="off", else its bf16 evaluation wrapper."""
    return Bf16Eval(model) if check_amp(amp) == "bf16" else model


def amp_caption(amp: str) -> str:
    """The sentence a table caption carries when its numbers were computed under bf16 autocast."""
    return (" Computed under bf16 autocast (--amp bf16): faster, not exact; the float32 numbers are the reference."
            if amp == "bf16" else "")
