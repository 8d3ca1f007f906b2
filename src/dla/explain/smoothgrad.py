"""SmoothGrad (Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017) and its two variants, as one
method of the registry, so that `dla explain --method smoothgrad` reaches it.

With g_s = | d y_c / d (x + n_s) |, n_s ~ N(0, noise^2) in pixel units (the fraction of the [0, 1] range: the
paper's 10-20%), s = 1..samples, and the max over colour channels taken last (as for saliency):

    smoothgrad     M = max_ch mean_s g_s
    smoothgrad_sq  M = max_ch mean_s g_s^2                 (Hooker et al. 2019's SG-SQ)
    vargrad        M = max_ch (mean_s g_s^2 - (mean_s g_s)^2)  (Adebayo et al. 2018), population variance

which are captum's `NoiseTunnel(Saliency)` nt_types on the absolute gradient. The noise is drawn from a
generator seeded with `seed`, one (C, H, W) tensor per copy shared by every image of the batch: reproducible,
and a sample's map does not depend on the rest of the batch (captum draws from the global RNG instead, so the
reference test injects these same tensors into captum). The noisy copies run `chunk` draws per backward pass,
(chunk * B, C, H, W): one pass per draw left small batches paying the per-pass overhead 25 times (2.5x slower at
batch 2, 1.4x at 16: BENCHMARKS.md); the chunk bounds memory and does not change the result.
"""

from __future__ import annotations

import torch
from torch import nn

from dla.explain.base import ExplainError, register_method
from dla.explain.saliency import Saliency

VARIANTS = ("smoothgrad", "smoothgrad_sq", "vargrad")


@register_method("smoothgrad", "SmoothGrad (Smilkov et al. 2017): saliency averaged over noisy copies; variants "
                               "smoothgrad_sq and vargrad")
class SmoothGrad(Saliency):
    def __init__(self, model: nn.Module, samples: int = 25, noise: float = 0.15, seed: int = 0,
                 variant: str = "smoothgrad", chunk: int = 8) -> None:
        super().__init__(model, samples, noise, seed)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ExplainError(f"smoothgrad: chunk must be a positive number of noisy copies per pass; got {chunk!r}")
        if samples < 1:
            raise ExplainError(f"smoothgrad needs samples >= 1 noisy copies (the paper uses ~50); got {samples!r}")
        if variant not in VARIANTS:
            raise ExplainError(f"unknown smoothgrad variant {variant!r}; use one of {', '.join(VARIANTS)}")
        self.variant, self.chunk = variant, chunk

    def noise_draws(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (S, C, H, W), N(0, 1)
        gen = torch.Generator().manual_seed(self.seed)
        return torch.randn((self.samples, *x.shape[1:]), generator=gen, dtype=x.dtype).to(x.device)

    def layer_map(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(x)  # (B, C, H, W): sum_s g_s
        squares = torch.zeros_like(x)  # (B, C, H, W): sum_s g_s^2
        for eps in self.noise_draws(x).split(self.chunk):  # (k, C, H, W), each draw broadcast over the batch
            k = len(eps)
            # (k * B, C, H, W): draw-major, the B images with draw 0, then with draw 1, ...
            g = self.abs_grad((x + self.noise * eps.unsqueeze(1)).flatten(0, 1), target.repeat(k)).view(k, *x.shape)
            total += g.sum(dim=0)
            squares += (g * g).sum(dim=0)
        mean, mean_sq = total / self.samples, squares / self.samples
        reduced = {"smoothgrad": mean, "smoothgrad_sq": mean_sq, "vargrad": mean_sq - mean * mean}[self.variant]
        return reduced.amax(dim=1)  # (B, H, W)
