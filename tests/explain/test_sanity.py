"""The cascading model-randomisation check (Adebayo et al. 2018): on a trained tiny net, Grad-CAM's maps lose
their correlation with the trained maps once the head is random; Spearman's coefficient by hand."""

from __future__ import annotations

import math

import torch

from dla.explain import explain
from dla.explain.sanity import cascade_layers, cascading_randomisation, ranks, spearman

from .nets import GapNet


def quadrant_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, 12, 12) dim noise with one bright 4 x 4 square in quadrant y (4 classes)."""
    gen = torch.Generator().manual_seed(seed)
    x = 0.2 * torch.rand(n, 3, 12, 12, generator=gen)
    y = torch.randint(0, 4, (n,), generator=gen)
    for i, q in enumerate(y.tolist()):
        r, c = 6 * (q // 2) + 1, 6 * (q % 2) + 1
        x[i, :, r : r + 4, c : c + 4] += 0.8
    return x, y


def trained_gapnet() -> GapNet:
    torch.manual_seed(0)
    model = GapNet(classes=4)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    x, y = quadrant_data(256, seed=0)
    for step in range(60):
        batch = slice(64 * (step % 4), 64 * (step % 4 + 1))
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_randomising_the_head_decorrelates_grad_cam() -> None:
    model = trained_gapnet()
    x, y = quadrant_data(16, seed=1)
    assert (model(x).argmax(dim=1) == y).float().mean() > 0.9  # it has learnt the task
    before = {k: v.clone() for k, v in model.state_dict().items()}

    layers = cascade_layers(model)
    assert layers == ["head", "body.3", "body.1"]  # from the head down
    curves = cascading_randomisation(model, lambda m: {"gradcam": explain(m, x, "gradcam", y)}, layers)

    assert len(curves["gradcam"]) == 3
    assert curves["gradcam"][0] < 0.5  # the head alone random: the maps are no longer the trained ones
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the model is not modified
    unchanged = cascading_randomisation(model, lambda m: {"gradcam": explain(m, x, "gradcam", y)}, [])
    assert unchanged == {"gradcam": []}


def test_spearman_is_pearson_of_average_ranks() -> None:
    torch.testing.assert_close(ranks(torch.tensor([3.0, 1.0, 1.0, 7.0])), torch.tensor([2.0, 0.5, 0.5, 3.0],
                                                                                     dtype=torch.float64))
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[10.0, 20.0, 30.0, 45.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    rho = spearman(a, b)
    assert rho[0] == 1.0 and rho[1] == -1.0 and math.isnan(rho[2])  # monotone, reversed, flat
