"""Benchmark: dla's APGD, PGD-L2, CW-L2, DeepFool, Square, FAB-T against torchattacks', images/s, same model, run.

The model is the registry's CNN for MNIST (`CNNConfig(depth, width)`, Normalize inside, eval mode), the batch
`--batch` random images in [0, 1] labelled with the model's own predictions (so every image is attacked), and both
sides run the same attack with the same settings: APGD-CE and APGD-T (3 target classes) at eps 8/255 with `--steps`
steps and seed 0, PGD-L2 at eps 1 with `--steps` steps, DeepFool (at most 50 steps, overshoot 0.02) and CW-L2
(`--steps` Adam steps, c = 1, on the model's logits + 50, where torchattacks' margin equals the paper's, see
tests/attacks/test_torchattacks.py), Square at eps 8/255 with `--queries` queries and seed 0, FAB-T at eps 8/255 (3
target classes, `--steps` steps, torchattacks' `FAB(multi_targeted=True)`). Before timing, each pair is checked to
agree (the largest difference over the pixels of the images torchattacks fooled); then the sides are timed
interleaved, median of `--repeats` after `--warmup`, and the ratio is torchattacks' time / ours (> 1: ours is
faster).

    python benchmarks/strong_attack_speed.py --threads 1       # writes benchmarks/results_strong_attack_speed.json
    python benchmarks/strong_attack_speed.py --quick            # a tiny CNN, batch 16, a few seconds
    python benchmarks/strong_attack_speed.py --quick --only Square,FAB-T --out benchmarks/results_x.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torchattacks
from torch import nn

from dla.attacks import get_attack
from dla.models import ModelInputs, build_model
from dla.models.cnn import CNNConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack_speed import markdown, time_pair
from machine import machine_info, save_result

DEFAULT_OUT = Path(__file__).resolve().parent / "results_strong_attack_speed.json"


class PositiveLogits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + 50


def build(depth: int, width: int, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    inputs = ModelInputs((1, 28, 28), 10, (0.286,), (0.353,))
    return build_model(CNNConfig(depth=depth, width=width), inputs).to(device).eval()


def sides(model: nn.Module, steps: int, queries: int) -> dict[str, tuple[nn.Module, Callable, Callable]]:
    """attack -> (the model both sides attack, ours, torchattacks'), each side a function (x, y) -> x_adv."""
    eps, shifted = 8 / 255, PositiveLogits(model).eval()  # eval: torchattacks puts back the mode it found
    ta = {"APGD-CE": torchattacks.APGD(model, eps=eps, steps=steps, seed=0, loss="ce"),
          "APGD-T": torchattacks.APGDT(model, eps=eps, steps=steps, seed=0, n_classes=4),
          "PGD-L2": torchattacks.PGDL2(model, eps=1.0, alpha=2.5 / steps, steps=steps),
          "DeepFool": torchattacks.DeepFool(model, steps=50, overshoot=0.02),
          "CW-L2": torchattacks.CW(shifted, c=1.0, steps=steps, lr=0.01),
          "Square": torchattacks.Square(model, eps=eps, n_queries=queries, seed=0),
          "FAB-T": torchattacks.FAB(model, eps=eps, steps=steps, multi_targeted=True, n_classes=4, seed=0)}
    ours = {"APGD-CE": lambda x, y: get_attack("apgd-ce")(model, x, y, eps, steps=steps, seed=0),
            "APGD-T": lambda x, y: get_attack("apgd-t")(model, x, y, eps, steps=steps, targets=3, seed=0),
            "PGD-L2": lambda x, y: get_attack("pgd-l2")(model, x, y, 1.0, steps=steps),
            "DeepFool": lambda x, y: get_attack("deepfool")(model, x, y, 100.0, steps=50),
            "CW-L2": lambda x, y: get_attack("cw-l2")(shifted, x, y, 100.0, steps=steps),
            "Square": lambda x, y: get_attack("square")(model, x, y, eps, queries=queries, seed=0),
            "FAB-T": lambda x, y: get_attack("fab-t")(model, x, y, eps, steps=steps, targets=3, seed=0)}
    return {k: (shifted if k == "CW-L2" else model, ours[k], ta[k]) for k in ta}


def agreement(model: nn.Module, ours: Callable, theirs: Callable, x: torch.Tensor, y: torch.Tensor) -> float:
    """The largest |ours - theirs| over the images torchattacks' attack fooled (after the same global seed)."""
    torch.manual_seed(1)
    a = ours(x, y)
    torch.manual_seed(1)
    b = theirs(x, y).detach()
    with torch.no_grad():
        fooled = model(b).argmax(1) != y
    if not fooled.any():
        return 0.0
    diff = float((a - b)[fooled].abs().max())
    if diff > 1e-4:
        sys.exit(f"ours and torchattacks disagree: max |diff| {diff:.3g} on the fooled images")
    return diff


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--queries", type=int, default=1000, help="Square's query budget")
    p.add_argument("--only", default=None, help="comma list of attacks to run, e.g. Square,FAB-T (default: all)")
    p.add_argument("--depth", type=int, default=9)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="CNN depth 9 width 4, batch 16, 10 steps, 3 repeats")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    if args.quick:
        args.depth, args.width, args.batch, args.steps, args.repeats, args.queries = 9, 4, 16, 10, 3, 200
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build(args.depth, args.width, device)
    x = torch.rand(args.batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    rows = []
    pairs = sides(model, args.steps, args.queries)
    only = list(pairs) if args.only is None else args.only.split(",")
    if unknown := [k for k in only if k not in pairs]:
        sys.exit(f"unknown attack(s) {', '.join(unknown)}; known: {', '.join(pairs)}")
    for name in only:
        target_model, ours, theirs = pairs[name]
        diff = agreement(target_model, ours, theirs, x, y)
        t_ours, t_theirs = time_pair(ours, theirs, x, y, args.warmup, args.repeats, device)
        m_ours, m_theirs = statistics.median(t_ours), statistics.median(t_theirs)
        rows.append({"attack": name, "batch": args.batch, "max_abs_diff_fooled": diff, "ours_median_s": m_ours,
                     "torchattacks_median_s": m_theirs, "ours_images_per_s": args.batch / m_ours,
                     "torchattacks_images_per_s": args.batch / m_theirs, "ratio": m_theirs / m_ours,
                     "ours_times_s": t_ours, "torchattacks_times_s": t_theirs})
        print(f"{name}: dla {args.batch / m_ours:.1f} images/s, torchattacks {args.batch / m_theirs:.1f} images/s, "
              f"ratio {m_theirs / m_ours:.2f}, max |diff| {diff:.2g}", flush=True)
    result = {"machine": machine_info(args.threads, device, torchattacks=torchattacks.__version__),
              "settings": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows}
    save_result(args.out, result, markdown(rows))


if __name__ == "__main__":
    main()
