"""Benchmark: the labs' sweeps, shared work vs the peers' per-cell loops, on a CIFAR-10 classifier.

Two sweeps, each run by both sides on the same model and images, tables compared, then timed interleaved:

- FGSM eps table (the lab's 11 values 0..10/255) on `--n` CIFAR-10 test images: `dla.attacks.evaluate_attack`
  (one input gradient per batch, shared by every eps; `AttackSpec.direction`) vs a loop of `torchattacks.FGSM`
  per eps, each followed by the accuracy pass. The two accuracy columns must be equal.
- ODIN grid (T in {1, 5, 10, 50, 100, 500, 1000} x eps in {0, 1..5/255}) on `--n-odin` CIFAR-10 test images vs as
  many Tiny-ImageNet images: `dla.ood.odin_grid` (one gradient per (batch, T), every eps > 0 in one stacked
  forward, eps = 0 from the clean logits) vs a loop of pytorch-ood's `odin_preprocessing` per (T, eps), then
  the tempered softmax. pytorch-ood does not clamp the stepped image to [0, 1] and dla does, so the loop clamps
  too (the same computation); the AUROC tables then agree to within float rounding of near-zero gradients.

The model is a trained run's best checkpoint (`--run`, e.g. runs/cnn_cifar10/s3/seed=0: the lab's 9-layer CNN),
else the registry's 9-layer CNN with random weights (the timings hold, the accuracies mean nothing).

    python benchmarks/sweep_speed.py --run runs/cnn_cifar10/s3/seed=0 --threads 2
    python benchmarks/sweep_speed.py --quick --out /tmp/sweep.json      # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # tests.ood.pood
from machine import machine_info, save_result

DEFAULT_OUT = Path(__file__).resolve().parent / "results_sweep_speed.json"
FGSM_EPS = [i / 255 for i in range(11)]
ODIN_T = [1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0]
ODIN_EPS = [i / 255 for i in range(6)]


def load(run: str | None, n: int, root: Path) -> tuple[nn.Module, torch.Tensor, torch.Tensor, str]:
    """(model in eval mode, test images float (n, 3, 32, 32) in [0, 1], labels, what the model is)."""
    from dla.config import DataConfig
    from dla.data import load_splits

    if run:
        from dla.train.restore import load_trained

        trained = load_trained(Path(run), root)
        x, y = trained.test_x[:n], trained.test_y[:n]
        return trained.model.eval(), x.float() / 255, y, f"{run} (best checkpoint)"
    from dla.models import ModelInputs, build_model
    from dla.models.cnn import CNNConfig

    splits = load_splits(DataConfig(name="cifar10_jpeg", val_size=0), root, 0)
    torch.manual_seed(0)
    model = build_model(CNNConfig(depth=9, width=32, stages=4),
                        ModelInputs(splits.input_shape, 10, splits.mean, splits.std))
    return model.eval(), splits.test.x[:n].float() / 255, splits.test.y[:n], "cnn depth=9 (random weights)"


def fgsm_sides(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[Callable, Callable]:
    import torchattacks

    from dla.attacks import evaluate_attack

    def accuracy(xs: torch.Tensor) -> float:
        with torch.no_grad():
            return float((model(xs).argmax(1) == y).double().mean())

    def ours() -> list[float]:
        return [r["accuracy"] for r in evaluate_attack(model, (x, y), "fgsm", FGSM_EPS, batch_size=500)]

    def theirs() -> list[float]:
        out = []
        for e in FGSM_EPS:
            adv = torch.cat([torchattacks.FGSM(model, eps=e)(x[i:i + 500], y[i:i + 500])
                             for i in range(0, len(x), 500)])
            out.append(accuracy(adv))
        return out

    return ours, theirs


def odin_loop_scores(model: nn.Module, x: torch.Tensor, bs: int = 500) -> np.ndarray:
    """pytorch-ood's ODIN per (T, eps) in chunks of bs: (nT, nE, N) tempered MSP of the stepped (clamped) images."""
    from tests.ood.pood import detector  # pytorch-ood's modules without its torchvision-importing __init__

    odin_preprocessing = detector("odin").odin_preprocessing
    out = np.empty((len(ODIN_T), len(ODIN_EPS), len(x)))
    for i, t in enumerate(ODIN_T):
        for j, e in enumerate(ODIN_EPS):
            for lo in range(0, len(x), bs):
                chunk = x[lo:lo + bs]
                xh = odin_preprocessing(model, chunk, eps=e, temperature=t).clamp(0, 1) if e else chunk
                with torch.no_grad():
                    s = torch.softmax(model(xh) / t, dim=1).amax(1)
                out[i, j, lo:lo + bs] = s.double().numpy()
    return out


def odin_sides(model: nn.Module, id_x: torch.Tensor, ood_x: torch.Tensor, bs: int) -> tuple[Callable, Callable]:
    from dla.ood.metrics import metrics
    from dla.ood.odin_grid import odin_grid

    def ours() -> np.ndarray:
        return odin_grid(model, id_x, ood_x, ODIN_T, ODIN_EPS).metrics["auroc"]

    def theirs() -> np.ndarray:
        s_id, s_ood = odin_loop_scores(model, id_x, bs), odin_loop_scores(model, ood_x, bs)
        return np.array([[metrics(s_id[i, j], s_ood[i, j])["auroc"] for j in range(len(ODIN_EPS))]
                         for i in range(len(ODIN_T))])

    return ours, theirs


def timed(ours: Callable, theirs: Callable, repeats: int) -> tuple[list[float], list[float], Any, Any]:
    """Interleaved wall-clock seconds of each side, and the last result of each."""
    times: tuple[list[float], list[float]] = ([], [])
    results: list[Any] = [None, None]
    for r in range(repeats):
        for side in ((0, 1) if r % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            results[side] = (ours, theirs)[side]()
            times[side].append(time.perf_counter() - t0)
    return times[0], times[1], results[0], results[1]


def main() -> None:
    from dla.data import resolve_data_root

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=None, help="a trained CIFAR-10 run folder (default: a random-weight CNN)")
    p.add_argument("--n", type=int, default=2000, help="test images of the FGSM table (default: 2000)")
    p.add_argument("--n-odin", type=int, default=500, help="ID and OOD images of the ODIN grid (default: 500)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="200 / 100 images, 1 repeat")
    p.add_argument("--only", choices=["fgsm", "odin"], default=None, help="run one of the two sweeps")
    p.add_argument("--loop-batch", type=int, default=500,
                   help="images per call of the ODIN loop (default: 500; dla picks its own, see eval_batch_size)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    if args.quick:
        args.n, args.n_odin, args.repeats = 200, 100, 1
    torch.set_num_threads(args.threads)
    root = resolve_data_root()
    model, x, y, what = load(args.run, max(args.n, args.n_odin), root)
    from dla.ood.data import OODSource, load_ood_set

    ood = load_ood_set(OODSource("tiny_imagenet", "tiny_imagenet", group="far"), root, tuple(x.shape[1:]),
                       args.n_odin, 0).x.float() / 255
    rows = []
    sweeps = (("fgsm", "FGSM eps table (11 eps)", lambda: fgsm_sides(model, x[:args.n], y[:args.n]), "equal"),
              ("odin", f"ODIN grid (7 T x 6 eps), loop batch {args.loop_batch}",
               lambda: odin_sides(model, x[:args.n_odin], ood, args.loop_batch), "close"))
    for key, name, sides, check in sweeps:
        if args.only not in (None, key):
            continue
        ours, theirs = sides()
        t_ours, t_theirs, a, b = timed(ours, theirs, args.repeats)
        diff = float(np.abs(np.asarray(a) - np.asarray(b)).max())
        if (check == "equal" and diff != 0) or diff > 2e-3:
            sys.exit(f"{name}: the two tables differ (max |diff| {diff:.3g})")
        m_ours, m_theirs = float(np.median(t_ours)), float(np.median(t_theirs))
        rows.append({"sweep": name, "ours_median_s": m_ours, "peer_median_s": m_theirs, "ratio": m_theirs / m_ours,
                     "max_abs_table_diff": diff, "ours_times_s": t_ours, "peer_times_s": t_theirs,
                     "ours_table": np.asarray(a).tolist()})
        print(f"{name}: dla {m_ours:.1f} s, peer loop {m_theirs:.1f} s, {m_theirs / m_ours:.2f}x, "
              f"max table diff {diff:.2g}", flush=True)
    import importlib.metadata

    import torchattacks

    result = {"machine": machine_info(args.threads, torch.device("cpu"), torchattacks=torchattacks.__version__,
                                      pytorch_ood=importlib.metadata.version("pytorch-ood")),
              "settings": {k: str(v) for k, v in vars(args).items() if k != "out"} | {"model": what}, "rows": rows}
    save_result(args.out, result)


if __name__ == "__main__":
    main()
