"""Benchmark: `dla.attacks.pgd` / `fgsm` against `torchattacks.PGD` / `FGSM`, images per second on the same model.

The model is the registry's 9-layer CNN for MNIST (`CNNConfig(depth=9, width=16)`, Normalize inside, eval mode),
the batch `--batch` random images in [0, 1] with random labels, and both sides run the same attack: PGD-L_inf
with `--steps` steps of alpha = 2.5 * eps / steps from a uniform random start (torchattacks' default), and FGSM,
at eps = 0.1. Each repeat times one call of each side, the sides interleaved so that a noisy shared machine
slows both alike; after `--warmup` untimed calls we report the median of `--repeats`, in images/s, and the
ratio ours / torchattacks (> 1: ours is faster). Before timing, a check that both sides agree: after the same
`torch.manual_seed`, their PGD examples match to float32 tolerance, and their FGSM examples exactly.

Run from the repository root:

    python benchmarks/attack_speed.py --threads 1                 # writes benchmarks/results_attack_speed.json
    python benchmarks/attack_speed.py --quick --out /tmp/as.json  # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchattacks
from torch import nn

from dla.attacks import fgsm, pgd
from dla.models import ModelInputs, build_model
from dla.models.cnn import CNNConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, save_result

DEFAULT_OUT = Path(__file__).resolve().parent / "results_attack_speed.json"
EPS = 0.1


def build(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    inputs = ModelInputs((1, 28, 28), 10, (0.286,), (0.353,))
    return build_model(CNNConfig(depth=9, width=16), inputs).to(device).eval()


def sides(model: nn.Module, steps: int) -> dict[str, tuple[Callable, Callable]]:
    """attack -> (ours, torchattacks'), each a function (x, y) -> x_adv."""
    alpha = 2.5 * EPS / steps
    ta_pgd = torchattacks.PGD(model, eps=EPS, alpha=alpha, steps=steps, random_start=True)
    ta_fgsm = torchattacks.FGSM(model, eps=EPS)
    return {
        f"PGD-{steps}": (lambda x, y: pgd(model, x, y, EPS, alpha, steps, random_start=True), ta_pgd),
        "FGSM": (lambda x, y: fgsm(model, x, y, EPS), ta_fgsm),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_agreement(name: str, ours: Callable, theirs: Callable, x: torch.Tensor, y: torch.Tensor) -> float:
    torch.manual_seed(1)
    a = ours(x, y)
    torch.manual_seed(1)
    b = theirs(x, y)
    diff = float((a - b).abs().max())
    if (name == "FGSM" and diff != 0) or diff > 1e-5:
        # PGD: float32 rounding may flip the sign of a near-zero gradient; count how many pixels differ.
        frac = float(((a - b).abs() > 1e-5).float().mean())
        if frac > 1e-3:
            sys.exit(f"{name}: ours and torchattacks disagree (max |diff| {diff:.3g}, {frac:.2%} of pixels)")
    return diff


def time_pair(ours: Callable, theirs: Callable, x: torch.Tensor, y: torch.Tensor, warmup: int, repeats: int,
              device: torch.device) -> tuple[list[float], list[float]]:
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(warmup + repeats):
        for side, fn in ((0, ours), (1, theirs)) if i % 2 == 0 else ((1, theirs), (0, ours)):
            sync(device)
            t0 = time.perf_counter()
            fn(x, y)
            sync(device)
            if i >= warmup:
                times[side].append(time.perf_counter() - t0)
    return times


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| Attack | Batch | dla (images/s) | torchattacks (images/s) | dla / torchattacks |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['attack']} | {r['batch']} | {r['ours_images_per_s']:.0f} | "
                     f"{r['torchattacks_images_per_s']:.0f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="batch 16, 1 warmup, 3 repeats")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    if args.quick:
        args.batch, args.warmup, args.repeats = 16, 1, 3
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build(device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(device)

    rows = []
    for name, (ours, theirs) in sides(model, args.steps).items():
        diff = check_agreement(name, ours, theirs, x, y)
        t_ours, t_theirs = time_pair(ours, theirs, x, y, args.warmup, args.repeats, device)
        m_ours, m_theirs = statistics.median(t_ours), statistics.median(t_theirs)
        rows.append({"attack": name, "batch": args.batch, "eps": EPS, "max_abs_diff": diff,
                     "ours_median_s": m_ours, "torchattacks_median_s": m_theirs,
                     "ours_images_per_s": args.batch / m_ours, "torchattacks_images_per_s": args.batch / m_theirs,
                     "ratio": m_theirs / m_ours, "ours_times_s": t_ours, "torchattacks_times_s": t_theirs})
        print(f"{name}: dla {args.batch / m_ours:.0f} images/s, torchattacks {args.batch / m_theirs:.0f} images/s, "
              f"ratio {m_theirs / m_ours:.2f}", flush=True)
    result = {"machine": machine_info(args.threads, device, torchattacks=torchattacks.__version__),
              "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"model": "cnn depth=9 width=16"},
              "rows": rows}
    save_result(args.out, result, markdown(rows))


if __name__ == "__main__":
    main()
