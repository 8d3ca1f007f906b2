"""Small models for the explanation tests: the registry CNN, a bare GAP + linear net, and a net with no conv."""

from __future__ import annotations

import torch
from torch import nn

from dla.models import ModelInputs, build_model
from dla.models.cnn import CNNConfig
from dla.nn import Normalize

COLOUR = ModelInputs((3, 32, 32), 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))


def registry_cnn(seed: int = 0, dtype: torch.dtype = torch.float32, **cfg: object) -> nn.Module:
    """depth-9, width-4 registry CNN (4 stages: 32 -> 4x4 maps), in eval mode, with BatchNorm statistics unlike any
    batch's, so that train mode (which mixes the batch) and eval mode give different maps."""
    torch.manual_seed(seed)
    model = build_model(CNNConfig(depth=9, width=4, **cfg), COLOUR)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.to(dtype).eval()


def images(b: int = 6, seed: int = 1, dtype: torch.dtype = torch.float32, shape: tuple[int, ...] = (3, 32, 32)
           ) -> torch.Tensor:
    return torch.rand(b, *shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


class GapNet(nn.Module):
    """conv - ReLU - conv -> global average pool -> linear: the last conv's output is what the head pools, the
    setting in which CAM and Grad-CAM (at the last conv) are the same map up to scale."""

    def __init__(self, classes: int = 7, pool: str = "mean") -> None:
        super().__init__()
        self.body = nn.Sequential(Normalize(COLOUR.mean, COLOUR.std), nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(6, 5, 3, stride=2, padding=1))
        self.head = nn.Linear(5, classes)
        self.pool = pool

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 5, H / 2, W / 2)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, classes)
        f = self.features(x)
        return self.head(f.mean(dim=(2, 3)) if self.pool == "mean" else f.amax(dim=(2, 3)))


def flat_net(classes: int = 10) -> nn.Module:
    """An MLP: a `head` but no conv maps; CAM and default Grad-CAM have nothing to read."""
    torch.manual_seed(0)
    model = nn.Sequential(Normalize(COLOUR.mean, COLOUR.std), nn.Flatten(), nn.Linear(3 * 32 * 32, classes))
    return model.eval()
