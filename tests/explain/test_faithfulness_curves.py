"""Deletion and insertion AUC (Petsiuk et al. 2018) on a model whose answer is known: an oracle map beats a
random one; and the curves' arithmetic by hand."""

from __future__ import annotations

import torch
from torch import nn

from dla.explain.faithfulness import auc, blurred, curve, deletion_insertion

H = W = 8


class RegionNet(nn.Module):
    """Class 0's logit is 10 x (the mean of the top-left 3 x 3 region - the mean of the rest), class 1's is 7: only
    the region's contrast matters, so the oracle map is that region."""

    def __init__(self) -> None:
        super().__init__()
        self.region = torch.zeros(1, 1, H, W, dtype=torch.bool)
        self.region[..., :3, :3] = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) -> (B, 2)
        inside = x[:, :, self.region[0, 0]].mean(dim=(1, 2))
        outside = x[:, :, ~self.region[0, 0]].mean(dim=(1, 2))
        score = 10 * (inside - outside)
        return torch.stack([score, torch.full_like(score, 7.0)], dim=1)


def test_an_oracle_map_beats_random_maps_on_deletion_and_insertion() -> None:
    model = RegionNet()
    gen = torch.Generator().manual_seed(0)
    x = torch.where(model.region, 0.9, 0.1 * torch.rand(6, 1, H, W, generator=gen))  # a bright region: class 0
    target = torch.zeros(6, dtype=torch.long)
    assert (model(x).argmax(dim=1) == 0).all() and (model(blurred(x)).argmax(dim=1) == 1).all()
    oracle = model.region[0].float().expand(6, H, W) + 0.01 * torch.rand(6, H, W, generator=gen)  # region first
    random = torch.rand(6, H, W, generator=gen)

    good, bad = deletion_insertion(model, x, oracle, target, 16), deletion_insertion(model, x, random, target, 16)

    assert good["deletion_auc"].shape == (6,)
    assert (good["deletion_auc"] < bad["deletion_auc"]).all()  # the score falls as soon as the region goes
    assert (bad["deletion_auc"] - good["deletion_auc"]).mean() > 0.15
    assert (good["insertion_auc"] > bad["insertion_auc"] + 0.1).all()  # and returns as soon as it is back
    assert (good["deletion_auc"] < 0.05).all() and (good["insertion_auc"] > 0.7).all()


def test_the_curve_moves_the_top_pixels_first_and_the_area_is_the_trapezoid_rule() -> None:
    class Mean(nn.Module):  # p_0 = sigmoid(mean pixel) through a 2-class softmax
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([m, torch.zeros_like(m)], dim=1)

    x = torch.ones(1, 1, 2, 2)
    maps = torch.tensor([[[0.1, 0.9], [0.5, 0.3]]])
    probs = curve(Mean(), x, torch.zeros_like(x), maps, torch.tensor([0]), steps=4)  # one pixel per step
    torch.testing.assert_close(probs[0], torch.sigmoid(torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])))
    torch.testing.assert_close(auc(torch.tensor([[1.0, 0.5, 0.0]])), torch.tensor([0.5]))
    torch.testing.assert_close(auc(torch.tensor([[1.0, 1.0, 1.0, 1.0]])), torch.tensor([1.0]))


def test_the_blur_keeps_constant_images_and_smooths_others() -> None:
    flat = torch.full((2, 3, 8, 8), 0.3)
    torch.testing.assert_close(blurred(flat), flat)
    noisy = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = blurred(noisy)
    assert out.shape == noisy.shape and out.std() < 0.5 * noisy.std()
    torch.testing.assert_close(out.mean(dim=(2, 3)), noisy.mean(dim=(2, 3)), atol=0.05, rtol=0)
