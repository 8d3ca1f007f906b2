"""Benchmark: `dla.ood.detectors` against pytorch-ood 0.4.0 on the same features: fit seconds and scoring samples/s.

Both sides get the same random features: `--train` ID training samples in `--classes` clusters of `--dim`
positive (softplus) features, a random linear head, and `--test` samples to score (what `dla.ood.features.extract`
gives a detector; the network's forward pass, shared by every detector, is not timed). Each repeat fits and
scores once per side, the sides interleaved so that load from elsewhere slows both alike; we report the median
of `--repeats` after one untimed warm-up, and ours / pytorch-ood's speed (> 1: ours is faster). Before timing, a
check that both give the same scores (the reference tests' mapping, tests/ood/test_detector_reference.py).
ViM keeps d = `--classes` principal directions, the clusters' span: any d inside the isotropic noise
spectrum would split equal eigenvalues, a subspace that float32 (pytorch-ood) and float64 (dla) pick apart.

pytorch-ood's package `__init__` imports torchvision; its detector modules do not, and are imported by file the
same way as in the tests (tests/ood/pood.py).

Run from the repository root:

    python benchmarks/ood_detectors.py --threads 1          # writes benchmarks/results_ood_detectors.json
    python benchmarks/ood_detectors.py --quick --out /tmp/o.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dla.ood.detectors import make_detector
from dla.ood.features import FeatureSet, LinearHead

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))
from machine import machine_info  # noqa: E402
from tests.ood import pood  # noqa: E402

DEFAULT_OUT = ROOT / "results_ood_detectors.json"


def features(n: int, dim: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, dim) positive clustered features and their labels (n,)."""
    g = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(classes, dim, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % classes
    return F.softplus(means[y] + 0.5 * torch.randn(n, dim, generator=g)), y


def peers(h: LinearHead, k: int, d: int, n: int) -> dict[str, tuple[dict[str, Any], Callable, Callable]]:
    """detector -> (dla options, pytorch-ood fit(z, y) -> fitted, pytorch-ood score(fitted, z) in dla's units).

    dla's units: higher = ID; Mahalanobis times n (pytorch-ood's scatter is not divided by n); GEN times K (it
    averages the top-M terms that the paper sums)."""
    det = pood.detector
    return {
        "mahalanobis": ({}, lambda z, y: det("mahalanobis").Mahalanobis(None).fit_features(z, y),
                        lambda r, z: -n * r.predict_features(z)),
        "knn": ({"k": k}, lambda z, y: det("knn").KNN(None, k=k).fit_features(z, y),
                lambda r, z: -r.predict_features(z)),
        "vim": ({"d": d}, lambda z, y: det("vim").ViM(None, d=d, w=h.weight, b=h.bias).fit_features(z, y),
                lambda r, z: -r.predict_features(z)),
        "react": ({}, lambda z, y: det("react").ReAct(None, head=h, percentile=0.9).fit_feature_maps(z, y),
                  lambda r, z: -r.predict_feature_maps(z)),
        "dice": ({}, lambda z, y: det("dice").DICE(None, h.weight, h.bias, p=0.9).fit_features(z, y),
                 lambda r, z: -r.predict_features(z)),
        "ash": ({}, lambda z, y: det("ash").ASH(None, head=lambda m: h(m.flatten(1)), variant="ash-s",
                                                percentile=0.9),
                lambda r, z: -r.predict_feature_maps(z[:, :, None, None])),
        "entropy": ({}, lambda z, y: None, lambda r, z: -det("entropy").Entropy.score(h(z))),
        "gen": ({}, lambda z, y: None, lambda r, z: -h.weight.shape[0] * det("gen").GEN.score(h(z), M=100)),
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def measure(name: str, train: FeatureSet, test: FeatureSet, peer: tuple, repeats: int) -> dict[str, Any]:
    options, fit_ref, score_ref = peer
    rows: dict[str, list[float]] = {"ours_fit": [], "ours_score": [], "ref_fit": [], "ref_score": []}
    for i in range(repeats + 1):  # the first is the untimed warm-up
        detector = make_detector(name, **options)
        t_fit, _ = timed(lambda d=detector: d.fit(train) if d.needs_fit else d)
        t_score, ours = timed(lambda d=detector: d.score(test))
        r_fit, ref = timed(lambda: fit_ref(train.features, train.labels))
        r_score, theirs = timed(lambda r=ref: score_ref(r, test.features))
        if i == 0:
            agree = _agree(name, ours, theirs)
            continue
        for key, value in zip(rows, (t_fit, t_score, r_fit, r_score), strict=True):
            rows[key].append(value)
    med = {k: statistics.median(v) for k, v in rows.items()}
    n = len(test)
    return {"fit_s": {"dla": med["ours_fit"], "pytorch_ood": med["ref_fit"]},
            "score_per_s": {"dla": n / med["ours_score"], "pytorch_ood": n / med["ref_score"]},
            "score_speedup": med["ref_score"] / med["ours_score"], "max_rel_diff": agree}


def _agree(name: str, ours: torch.Tensor, theirs: torch.Tensor) -> float:
    theirs = theirs.double()
    scale = float(theirs.abs().max())
    diff = float((ours.double() - theirs).abs().max()) / scale
    if diff > 1e-4:
        raise SystemExit(f"{name}: dla and pytorch-ood disagree ({diff:.2e} of the scores' scale)")
    return diff


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=50000)
    p.add_argument("--test", type=int, default=10000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="2,000 train, 1,000 test, 64 dims, 1 repeat")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.quick:
        args.train, args.test, args.dim, args.repeats = 2000, 1000, 64, 1
    torch.set_num_threads(args.threads)
    z, y = features(args.train, args.dim, args.classes, seed=1)
    zt, _ = features(args.test, args.dim, args.classes, seed=2)
    g = torch.Generator().manual_seed(3)
    w, b = 0.05 * torch.randn(args.classes, args.dim, generator=g), 0.1 * torch.randn(args.classes, generator=g)
    h = LinearHead(w, b)
    train, test = FeatureSet(z, h(z), h, y), FeatureSet(zt, h(zt), h)
    results = {name: measure(name, train, test, peer, args.repeats)
               for name, peer in peers(h, k=50, d=args.classes, n=args.train).items()}
    for name, r in results.items():
        print(f"{name:12s} fit {r['fit_s']['dla']:.3f} s vs {r['fit_s']['pytorch_ood']:.3f} s; score "
              f"{r['score_per_s']['dla']:,.0f} vs {r['score_per_s']['pytorch_ood']:,.0f} samples/s "
              f"({r['score_speedup']:.2f}x); max diff {r['max_rel_diff']:.1e}")
    import importlib.metadata

    setup = {k: getattr(args, k) for k in ("train", "test", "dim", "classes", "repeats")}
    info = machine_info(args.threads, torch.device("cpu"), pytorch_ood=importlib.metadata.version("pytorch-ood"))
    args.out.write_text(json.dumps({"machine": info, "setup": setup, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
