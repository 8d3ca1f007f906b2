"""CAM, Grad-CAM and saliency on a network small enough to work out with pencil and paper.

The network, with every weight chosen by hand (float64, so every number below is exact: all are dyadic):

    x (1, 4, 4) in [0, 1] -> Normalize(mean 0.5, std 0.5): n = 2x - 1
      -> conv: 1x1, stride 2, 1 -> 2 channels, weights (1, -1/2), biases (0, 1/8):   Z (2, 2, 2)
      -> ReLU: A = max(Z, 0)                            (`features(x)`: the maps CAM reads)
      -> global average pool over the 2x2 positions -> head: Linear(2, 3), W and b below

The stride-2 conv reads only the pixels x[0::2, 0::2]; those are X below (the others are never used).

    X   = [[0, 1/4], [3/4, 1]]          n = 2X - 1 = [[-1, -1/2], [1/2, 1]]
    Z_0 = n                          = [[-1, -1/2], [1/2, 1]]              A_0 = [[0, 0], [1/2, 1]]
    Z_1 = -n / 2 + 1/8               = [[5/8, 3/8], [-1/8, -3/8]]          A_1 = [[5/8, 3/8], [0, 0]]
    GAP: mean A_0 = 3/8, mean A_1 = 1/4

    W = [[2, 1], [-1, 3], [2, -4]],  b = [1/4, 0, -1/4]
    logits: y_0 = 2*3/8 + 1/4 + 1/4 = 5/4,  y_1 = -3/8 + 3/4 = 3/8,  y_2 = 3/4 - 1 - 1/4 = -1/2   -> predicted: 0

CAM_c = W_c0 A_0 + W_c1 A_1. Grad-CAM at the conv (pre-ReLU Z): dy_c/dZ_k(i, j) = W_ck / 4 * [Z_k(i, j) > 0], and
each channel is positive at exactly 2 of the 4 positions, so alpha_ck = W_ck / 8 and Grad-CAM_c = (W_c0 Z_0 +
W_c1 Z_1) / 8. Grad-CAM at the ReLU (A itself): alpha_ck = W_ck / 4, so it is CAM_c / 4. Saliency:
dy_c/dx = 2 (the 1/std) * sum_k W_ck / 4 * [Z_k > 0] * conv_k at the read pixels, 0 at the others: the bottom row
of Z is channel 0's (conv 1), the top row channel 1's (conv -1/2), so dy_c/dx = W_c0 / 2 at the bottom read
pixels and -W_c1 / 4 at the top ones.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dla.explain import cam, explain, grad_cam, saliency
from dla.nn import Normalize

F64 = torch.float64
EXACT = {"rtol": 0.0, "atol": 1e-12}


class HandNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = Normalize([0.5], [0.5])
        self.conv = nn.Conv2d(1, 2, 1, stride=2)
        self.relu = nn.ReLU()
        self.head = nn.Linear(2, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -0.5]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, 0.125]))
            self.head.weight.copy_(torch.tensor([[2.0, 1.0], [-1.0, 3.0], [2.0, -4.0]]))
            self.head.bias.copy_(torch.tensor([0.25, 0.0, -0.25]))

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 4, 4) -> (B, 2, 2, 2)
        return self.relu(self.conv(self.norm(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 4, 4) -> (B, 3)
        return self.head(self.features(x).mean(dim=(2, 3)))


def hand_net() -> nn.Module:
    return HandNet().to(F64).eval()


def image() -> torch.Tensor:  # (1, 1, 4, 4): X at the even positions, pixels the stride-2 conv never reads elsewhere
    return torch.tensor([[0.00, 0.9, 0.25, 0.1],
                         [0.30, 0.6, 0.20, 0.7],
                         [0.75, 0.4, 1.00, 0.8],
                         [0.50, 0.5, 0.05, 0.0]], dtype=F64).view(1, 1, 4, 4)


def t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


# Per class c = 0, 1, 2, from the formulas in the module docstring.
CAM_RAW = [
    t([[2 * 0 + 5 / 8, 2 * 0 + 3 / 8], [2 * 0.5 + 0, 2 * 1 + 0]]),          # [[5/8, 3/8], [1, 2]]
    t([[-0 + 3 * 5 / 8, -0 + 3 * 3 / 8], [-0.5 + 0, -1 + 0]]),             # [[15/8, 9/8], [-1/2, -1]]
    t([[2 * 0 - 4 * 5 / 8, 2 * 0 - 4 * 3 / 8], [2 * 0.5 - 0, 2 * 1 - 0]]),  # [[-5/2, -3/2], [1, 2]]
]
GRAD_CAM_RAW = [  # (W_c0 Z_0 + W_c1 Z_1) / 8
    t([[(2 * -1 + 5 / 8) / 8, (2 * -0.5 + 3 / 8) / 8], [(2 * 0.5 - 1 / 8) / 8, (2 * 1 - 3 / 8) / 8]]),
    t([[(1 + 3 * 5 / 8) / 8, (0.5 + 3 * 3 / 8) / 8], [(-0.5 - 3 / 8) / 8, (-1 - 3 * 3 / 8) / 8]]),
    t([[(-2 - 4 * 5 / 8) / 8, (-1 - 4 * 3 / 8) / 8], [(1 + 4 / 8) / 8, (2 + 4 * 3 / 8) / 8]]),
]


def saliency_raw(c: int) -> torch.Tensor:
    w = [[2.0, 1.0], [-1.0, 3.0], [2.0, -4.0]][c]
    top, bottom = abs(-w[1] / 4), abs(w[0] / 2)
    return t([[top, 0, top, 0], [0, 0, 0, 0], [bottom, 0, bottom, 0], [0, 0, 0, 0]])


def test_the_hand_net_has_the_hand_computed_logits() -> None:
    torch.testing.assert_close(hand_net()(image()), t([[5 / 4, 3 / 8, -1 / 2]]), **EXACT)


@pytest.mark.parametrize("target", [None, 0, 1, 2])
def test_cam_grad_cam_and_saliency_raw_maps_are_the_hand_computed_ones(target: int | None) -> None:
    model, x = hand_net(), image()
    c = 0 if target is None else target  # None: the predicted class, 0 (y_0 = 5/4 is the largest logit)

    _, raw = cam(model, x, target, raw=True)
    torch.testing.assert_close(raw, CAM_RAW[c].unsqueeze(0), **EXACT)
    _, raw = grad_cam(model, x, target, raw=True)  # the default layer: the last (only) conv, before the ReLU
    torch.testing.assert_close(raw, GRAD_CAM_RAW[c].unsqueeze(0), **EXACT)
    _, raw = grad_cam(model, x, target, layer="relu", raw=True)  # at the pooled maps: CAM / (h * w)
    torch.testing.assert_close(raw, (CAM_RAW[c] / 4).unsqueeze(0), **EXACT)
    _, raw = saliency(model, x, target, raw=True)
    torch.testing.assert_close(raw, saliency_raw(c).unsqueeze(0), **EXACT)


def test_per_sample_targets_give_each_sample_its_own_hand_computed_map() -> None:
    model, x = hand_net(), image().expand(3, 1, 4, 4)
    saliency_raws = [saliency_raw(c) for c in range(3)]
    for method, want in (("cam", CAM_RAW), ("gradcam", GRAD_CAM_RAW), ("saliency", saliency_raws)):
        _, raw = explain(model, x, method, [2, 0, 1], raw=True)
        torch.testing.assert_close(raw, torch.stack([want[2], want[0], want[1]]), **EXACT)


def test_display_maps_are_relu_bilinear_upsampling_and_min_max_by_hand() -> None:
    model, x = hand_net(), image()
    # CAM of class 0, [[5/8, 3/8], [1, 2]], all positive (ReLU keeps it). Bilinear 2 -> 4, align_corners=False:
    # output k samples source (k + 1/2) / 2 - 1/2 = -1/4, 1/4, 3/4, 5/4, clamped to [0, 1]: a pair [p, q] becomes
    # [p, 3p/4 + q/4, p/4 + 3q/4, q], first down the rows, then along each row.
    rows = [[5 / 8, 3 / 8], [3 / 4 * 5 / 8 + 1 / 4, 3 / 4 * 3 / 8 + 1 / 2],
            [1 / 4 * 5 / 8 + 3 / 4, 1 / 4 * 3 / 8 + 3 / 2], [1, 2]]
    up = t([[p, 3 * p / 4 + q / 4, p / 4 + 3 * q / 4, q] for p, q in rows])
    lo, hi = 3 / 8, 2  # the corners of the map are its extremes
    torch.testing.assert_close(cam(model, x), ((up - lo) / (hi - lo)).unsqueeze(0), **EXACT)

    # Grad-CAM of class 1 at the conv: [[23/64, 13/64], [-7/64, -17/64]]; ReLU zeroes the bottom row, then the same
    # upsampling and min-max (min 0, max 23/64).
    rows = [[23 / 64, 13 / 64], [3 / 4 * 23 / 64, 3 / 4 * 13 / 64], [1 / 4 * 23 / 64, 1 / 4 * 13 / 64], [0, 0]]
    up = t([[p, 3 * p / 4 + q / 4, p / 4 + 3 * q / 4, q] for p, q in rows])
    torch.testing.assert_close(grad_cam(model, x, 1), (up / (23 / 64)).unsqueeze(0), **EXACT)

    # Saliency of class 1: 3/4 at the top read pixels, 1/2 at the bottom ones, 0 elsewhere: divided by its max.
    torch.testing.assert_close(saliency(model, x, 1), (saliency_raw(1) / (3 / 4)).unsqueeze(0), **EXACT)
    # Saliency of class 2: |-(-4)/4| = 1 = |2/2|, the same at all four read pixels.
    torch.testing.assert_close(saliency(model, x, 2), (saliency_raw(2) / 1).unsqueeze(0), **EXACT)
