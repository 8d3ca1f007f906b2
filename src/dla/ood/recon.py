"""Reconstruction-error OOD score: an autoencoder fit to the ID training data; score = -MSE per sample.

Two kinds, one score (`dla.ood.score(model, x, "recon", autoencoder=ae)`):

- pixels (`ConvAutoencoder`): a small conv autoencoder on the images themselves; the classifier is not used.
  It learns what ID images look like, so inputs unlike them (other datasets, noise) reconstruct badly.
- features (`FeatureAutoencoder`): an MLP autoencoder on a frozen classifier's penultimate features,
  `model.features(x).mean((2, 3))` for the CNN (the vector its linear head reads), standardised with the ID
  training features' mean and std so every feature weighs the same in the error.

`train_autoencoder` fits either one deterministically (seeded init and batch order, Adam, MSE);
`autoencoder_for_run` caches it in RUN_DIR/ood/ (atomic write, weights-only load) and retrains only when the
cached one was made with other settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from dla.nn.modes import eval_frozen
from dla.ood.metrics import OODError
from dla.ood.scores import register_score

Mode = Literal["pixels", "features"]


class ConvAutoencoder(nn.Module):
    """(B, C, H, W) in [0, 1] -> a reconstruction of the same shape, in [0, 1].

    Two stride-2 convs down (H -> ceil(H/2) -> ceil(H/4)), two transposed convs up (x4), cropped back to H x W,
    so any image size works (28 -> 14 -> 7 -> 28; 32 -> 16 -> 8 -> 32; 6 -> 3 -> 2 -> 8 -> crop 6).
    No BatchNorm: a sample's reconstruction must not depend on the rest of its batch.
    """

    mode: Mode = "pixels"

    def __init__(self, input_shape: tuple[int, int, int], width: int = 16, code: int = 8) -> None:
        super().__init__()
        c = input_shape[0]
        self.input_shape = tuple(input_shape)
        self.encoder = nn.Sequential(
            nn.Conv2d(c, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, code, 1),  # the bottleneck: `code` channels at a quarter of the resolution
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(code, 2 * width, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, c, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = self.decoder(self.encoder(x))  # (B, C, >= H, >= W)
        return torch.sigmoid(out[..., :h, :w])

    def error(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B,)
        return (self(x) - x).pow(2).flatten(1).mean(1)


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The vector the classifier's linear head reads: `model.features(x)` averaged over space -> (B, D)."""
    features = getattr(model, "features", None)
    if not callable(features):
        raise OODError(f"{type(model).__name__} has no features(x) method, so --recon-features has nothing to read; "
                       "use the pixel autoencoder (drop --recon-features) or a CNN run")
    f = features(x)
    return f.mean(dim=(2, 3)) if f.ndim == 4 else f.flatten(1)


class FeatureAutoencoder(nn.Module):
    """(B, D) standardised penultimate features -> reconstruction: D -> hidden -> code -> hidden -> D."""

    mode: Mode = "features"

    def __init__(self, dim: int, hidden: int = 64, code: int = 16) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, code), nn.ReLU(),
                                 nn.Linear(code, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # standardised (B, D) -> (B, D)
        return self.net(z)

    def standardise(self, f: torch.Tensor) -> torch.Tensor:
        return (f - self.mean) / self.std

    def error(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B,)
        z = self.standardise(penultimate(model, x))
        return (self(z) - z).pow(2).mean(1)


Autoencoder = ConvAutoencoder | FeatureAutoencoder


@register_score("recon", "negated autoencoder reconstruction error (pixels or the classifier's features)")
def recon(model: nn.Module, x: torch.Tensor, autoencoder: Autoencoder | None = None) -> torch.Tensor:
    """-MSE between the input (or its features) and the autoencoder's reconstruction: higher = more ID."""
    if autoencoder is None:
        raise OODError("score 'recon' needs autoencoder=...: fit one with dla.ood.recon.train_autoencoder, or let "
                       "`dla ood --methods recon` train and cache it")
    if not isinstance(autoencoder, ConvAutoencoder | FeatureAutoencoder):
        raise OODError(f"autoencoder must be a ConvAutoencoder or FeatureAutoencoder; got {type(autoencoder).__name__}")
    device = next(autoencoder.parameters()).device
    with eval_frozen(autoencoder), torch.no_grad():
        return -autoencoder.error(model, x.to(device)).float().cpu()


@torch.no_grad()
def _features_of(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Float (N, C, H, W) in [0, 1] -> (N, D) penultimate features of the frozen classifier, in eval mode."""
    with eval_frozen(model):
        return torch.cat([penultimate(model, x[i: i + batch_size])
                          for i in range(0, len(x), batch_size)])


def train_autoencoder(x: torch.Tensor, mode: Mode = "pixels", model: nn.Module | None = None, *, epochs: int = 5,
                      batch_size: int = 128, lr: float = 2e-3, seed: int = 0) -> Autoencoder:
    """Fit an autoencoder to ID training images `x` (uint8 or float in [0, 1], (N, C, H, W)); eval mode, CPU.

    `mode="features"` needs the (frozen) classifier `model`; its features are computed once, then the MLP is fit
    on them. The same inputs and seed give the same weights (seeded init, seeded batch order, CPU).
    """
    if epochs < 1 or batch_size < 1:
        raise OODError(f"autoencoder epochs and batch_size must be >= 1; got {epochs} and {batch_size}")
    if len(x) == 0:
        raise OODError("cannot fit an autoencoder to zero images")
    xf = x.float().div(255) if not x.is_floating_point() else x.float()
    torch.manual_seed(seed)  # the weights' initial values
    ae: Autoencoder
    if mode == "pixels":
        ae = ConvAutoencoder(tuple(xf.shape[1:]))  # type: ignore[arg-type]
        data = xf
    elif mode == "features":
        if model is None:
            raise OODError("the features autoencoder needs the classifier: pass model=")
        f = _features_of(model, xf, 500)  # (N, D)
        ae = FeatureAutoencoder(f.shape[1])
        ae.mean.copy_(f.mean(0))
        ae.std.copy_(f.std(0).clamp_min(1e-4) if len(f) > 1 else torch.ones(f.shape[1]))
        data = ae.standardise(f)
    else:
        raise OODError(f"autoencoder mode must be 'pixels' or 'features'; got {mode!r}")
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    ae.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(data), generator=g).split(batch_size):
            batch = data[idx]
            loss = F.mse_loss(ae(batch), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return ae.eval()


def autoencoder_for_run(folder: Path, x: torch.Tensor, mode: Mode, model: nn.Module, *, epochs: int, seed: int,
                        log: Any = print) -> Autoencoder:
    """The cached autoencoder in `folder` when it was fit with these settings, else a new one (then cached)."""
    from dla.train.checkpoint import load_cache, save_checkpoint

    path = folder / ("autoencoder.pt" if mode == "pixels" else "autoencoder_features.pt")
    settings = {"mode": mode, "epochs": epochs, "seed": seed, "n": len(x), "shape": list(x.shape[1:])}
    state = load_cache(path, "settings", settings, "autoencoder", log)
    if state is not None:
        ae: Autoencoder
        if mode == "pixels":
            ae = ConvAutoencoder(tuple(settings["shape"]))  # type: ignore[arg-type]
        else:
            ae = FeatureAutoencoder(state["model"]["mean"].shape[0])
        ae.load_state_dict(state["model"])
        return ae.eval()
    log(f"fitting the {mode} autoencoder on {len(x)} ID training images ({epochs} epoch{'s' * (epochs > 1)})...")
    ae = train_autoencoder(x, mode, model, epochs=epochs, seed=seed)
    save_checkpoint(path, {"kind": "autoencoder", "settings": settings, "model": ae.state_dict()})
    return ae
