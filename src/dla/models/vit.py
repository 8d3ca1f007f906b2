"""A Vision Transformer (Dosovitskiy et al. 2021) sized for small images, written to be read top to bottom.

    image (B, C, H, W) in [0, 1]
      -> Normalize
      -> patch embedding: a p x p conv with stride p            (B, D, H/p, W/p) -> (B, N, D), N = HW / p^2
      -> [class token] + learned position embeddings            (B, N + 1, D) with pool=cls, else (B, N, D)
      -> depth x pre-norm blocks: x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x)))
      -> LayerNorm -> class token or mean over the patches      (B, D)
      -> linear head                                            (B, classes)

Attention is `F.scaled_dot_product_attention`. With `window=w` (odd) it is local: each patch attends only to
the patches of the w x w neighbourhood centred on it, expressed as a boolean mask handed to SDPA (a sliding
window, like a w x w convolution with zero padding: patches near the border see fewer neighbours). The class
token, when there is one, attends to every patch and every patch attends to it, so it still gathers the
whole image. A mask leaves the attention code as it is and works on any grid (7 x 7 for 28 x 28 images with
4 x 4 patches), where Swin-style partitioning into non-overlapping windows needs the grid to be a multiple of
the window; the price is that masked attention costs as much as global attention (the scores are computed
and then discarded), which is nothing at N = 64.

Stochastic depth (Huang et al. 2016) drops a whole residual branch per sample during training with a
probability that grows linearly from 0 at the first block to `drop_path` at the last; in eval mode it is the
identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dla.config import ModelConfig, opt
from dla.errors import ConfigError
from dla.models.registry import ModelInputs, register_model
from dla.nn import Normalize


@dataclass
class ViTConfig(ModelConfig):
    name: str = opt("vit", "model from the registry")
    patch_size: int = opt(4, "side of the square patches; must divide the image height and width (28 -> 7x7 "
                             "patches of 4)", ge=1, le=1024)
    dim: int = opt(96, "embedding width D of every token", ge=1, le=8192)
    depth: int = opt(6, "transformer blocks", ge=1, le=256)
    heads: int = opt(4, "attention heads; must divide dim (head size = dim / heads)", ge=1, le=256)
    mlp_ratio: float = opt(2.0, "hidden width of each block's MLP as a multiple of dim", gt=0, le=64)
    dropout: float = opt(0.0, "dropout on the embeddings, the attention weights and after each MLP / projection",
                         ge=0, lt=1)
    drop_path: float = opt(0.1, "stochastic depth: drop probability of a residual branch at the last block, "
                                "linearly from 0 at the first; identity in eval mode", ge=0, lt=1)
    pool: Literal["cls", "mean"] = opt("cls", "classify from a learned class token, or from the mean of the patch "
                                              "tokens")
    window: int = opt(0, "0 = global attention; an odd w = each patch attends to the w x w neighbourhood of "
                         "patches around it (sliding window, an attention mask for SDPA)", ge=0, le=1023)
    pos_embed: Literal["learned", "none"] = opt("learned", "learned position embeddings added to the tokens, or "
                                                           "none (the transformer then sees a bag of patches)")


class DropPath(nn.Module):
    """Zero a residual branch for a random subset of the samples, rescaling the rest by 1 / keep."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (B, ...)
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, 1): one draw per sample
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


class Attention(nn.Module):
    """Multi-head self-attention; `mask` (T, T) bool, True where a query may attend to a key."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)  # q, k, v for all heads in one matrix product
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        b, t, d = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, d // self.heads)  # (B, T, 3, H, D/H)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, D/H)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, D/H)
        y = y.transpose(1, 2).reshape(b, t, d)  # (B, T, D): heads side by side again
        return self.proj_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: the residual stream itself is never normalised, which keeps deep stacks
    trainable without warmup tricks (Xiong et al. 2020)."""

    def __init__(self, cfg: ViTConfig, drop_path: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.dim)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.dropout)
        self.ln2 = nn.LayerNorm(cfg.dim)
        self.mlp = MLP(cfg.dim, max(1, round(cfg.dim * cfg.mlp_ratio)), cfg.dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        x = x + self.drop_path(self.attn(self.ln1(x), mask))
        return x + self.drop_path(self.mlp(self.ln2(x)))


def window_mask(grid: tuple[int, int], window: int, cls_token: bool) -> torch.Tensor:
    """(T, T) bool: patch i may attend to patch j when j lies in the window x window square centred on i.

    Tokens are the patches in row-major order, after the class token when there is one; the class token
    attends to and is attended by every token.
    """
    h, w = grid
    rows = torch.arange(h).repeat_interleave(w)  # (N,) row of each patch
    cols = torch.arange(w).repeat(h)  # (N,) column of each patch
    r = window // 2
    near = ((rows[:, None] - rows[None, :]).abs() <= r) & ((cols[:, None] - cols[None, :]).abs() <= r)  # (N, N)
    if cls_token:
        near = F.pad(near, (1, 0, 1, 0), value=True)  # (N + 1, N + 1): a first row and column of True
    return near


class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig, inputs: ModelInputs) -> None:
        super().__init__()
        c, h, w = inputs.input_shape
        p, d = cfg.patch_size, cfg.dim
        self.image_size, self.grid = (h, w), (h // p, w // p)
        n = self.grid[0] * self.grid[1]
        self.normalize = Normalize(inputs.mean, inputs.std)
        # A p x p conv with stride p is a linear map of each flattened patch: the "linear projection of
        # flattened patches" of the paper, without an explicit reshape.
        self.patch_embed = nn.Conv2d(c, d, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.pool == "cls" else None
        tokens = n + (self.cls_token is not None)
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, d)) if cfg.pos_embed == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # 0 ... drop_path
        self.blocks = nn.ModuleList(Block(cfg, r) for r in rates)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, inputs.num_classes)
        self.pool = cfg.pool
        # Not persistent: the mask follows from the config, so checkpoints stay the same with or without it.
        mask = window_mask(self.grid, cfg.window, self.cls_token is not None) if cfg.window else None
        self.register_buffer("attn_mask", mask, persistent=False)
        self._init()

    def _init(self) -> None:
        # The original ViT's initialisation (big_vision), which scales with the width: Xavier-uniform linear
        # layers, a LeCun-normal patch embedding, position embeddings of std 1/sqrt(D), a zero class token.
        # (timm's fixed std of 0.02 suits D = 768; at D = 64 it leaves every branch ~6x too small, and the
        # model trains visibly slower: 55% vs 73% Fashion-MNIST validation accuracy after 200 steps of 64.)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        fan_in = self.patch_embed.weight[0].numel()  # C * p * p
        nn.init.trunc_normal_(self.patch_embed.weight, std=fan_in**-0.5)
        nn.init.zeros_(self.patch_embed.bias)
        if self.pos_embed is not None:
            nn.init.normal_(self.pos_embed, std=self.pos_embed.shape[-1] ** -0.5)
        if self.cls_token is not None:
            nn.init.zeros_(self.cls_token)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, T, D) after the blocks
        if tuple(x.shape[-2:]) != self.image_size:
            raise ConfigError(f"this ViT was built for {self.image_size[0]}x{self.image_size[1]} images (its position "
                              f"embeddings are per patch); got {x.shape[-2]}x{x.shape[-1]}; resize the images")
        x = self.patch_embed(self.normalize(x))  # (B, D, H/p, W/p)
        x = x.flatten(2).transpose(1, 2)  # (B, N, D), patches in row-major order
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, N + 1, D)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, self.attn_mask)
        return self.norm(x)

    @property
    def explain_layer(self) -> str:
        """Where Grad-CAM and its kin read this model (`dla.explain.base.default_layer`): the tokens entering
        the last block, after its first LayerNorm. With a class token, the last block's *output* patch tokens
        never reach the head (only the class token is read), so their gradient is zero; the tokens the last
        block attends over are the last ones the score depends on (pytorch-grad-cam's `blocks[-1].norm1`)."""
        return f"blocks.{len(self.blocks) - 1}.ln1"

    def tokens_to_maps(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, D, H/p, W/p)
        """Token activations (or their gradients) as feature maps: the class token dropped, the patches back
        on their grid in row-major order."""
        if self.cls_token is not None:
            tokens = tokens[:, 1:]  # (B, N, D)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, D): what head reads
        t = self.tokens(x)  # (B, T, D)
        return t[:, 0] if self.pool == "cls" else t.mean(dim=1)  # the class token or the mean token

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, classes)
        return self.head(self.penultimate(x))


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def check_config(cfg: ViTConfig, inputs: ModelInputs) -> None:
    """Every ViT mistake that shows up only with the data's image size, as one ConfigError naming the fix."""
    _, h, w = inputs.input_shape
    p = cfg.patch_size
    if h % p or w % p:
        valid = sorted(set(_divisors(h)) & set(_divisors(w)))
        raise ConfigError(f"model.patch_size={p} does not divide the {h}x{w} images into whole patches; valid patch "
                          f"sizes for {h}x{w}: {', '.join(map(str, valid))}")
    if cfg.dim % cfg.heads:
        valid = [k for k in _divisors(cfg.dim) if k <= 64]
        raise ConfigError(f"model.dim={cfg.dim} is not divisible by model.heads={cfg.heads}; every head gets dim / "
                          f"heads channels: use heads in {', '.join(map(str, valid))}, or a dim that is a multiple "
                          f"of {cfg.heads}")
    gh, gw = h // p, w // p
    if cfg.window:
        if cfg.window % 2 == 0:
            raise ConfigError(f"model.window={cfg.window} must be odd (3, 5, 7, ...) so the window is centred on its "
                              f"patch; or 0 for global attention")
        if cfg.window > max(gh, gw):
            raise ConfigError(f"model.window={cfg.window} is larger than the {gh}x{gw} patch grid "
                              f"({h}x{w} images, patch_size={p}); use an odd window <= {max(gh, gw)}, or window=0 "
                              f"for global attention")


@register_model("vit", ViTConfig, "Vision Transformer: patch size, dim, depth, heads, cls/mean pooling, local "
                                  "windows, stochastic depth")
def build_vit(cfg: ViTConfig, inputs: ModelInputs) -> nn.Module:
    check_config(cfg, inputs)
    return ViT(cfg, inputs)

