"""Benchmark: `dla.ood.detectors` against pytorch-ood 0.4.0 on the same features: fit seconds and scoring samples/s.

Two sources of features, both sides getting the same tensors:
- `--run RUN_DIR` (the measurement): a trained run's real penultimate features, as `dla ood` gives them to its
  detectors: fitted on the first `--fit-limit` training images (cached in RUN_DIR/ood/features_train.pt like
  `dla ood` caches them: point it at a copy of the run), scoring the first `--test` test images, the run's own
  linear head. This also times `mahalanobis_pre` against pytorch-ood's MahalanobisODIN on the first
  `--pre-test` test images: its scoring runs the network forward and backward, so it is timed on images;
- without `--run`: random features, `--train` ID samples in `--classes` clusters of `--dim` positive (softplus)
  features, a random linear head, `--test` samples to score. ViM keeps d = `--classes` principal directions
  there, the clusters' span: any d inside the isotropic noise spectrum would split equal eigenvalues, a subspace
  that float32 (pytorch-ood) and float64 (dla) pick apart.

The forward pass that extracts the features, shared by every detector, is not timed. Each repeat fits and scores
once per side, the sides interleaved so that load from elsewhere slows both alike; we report the median of
`--repeats` after one untimed warm-up, and ours / pytorch-ood's speed (> 1: ours is faster). Before timing, a
check that both give the same scores (the reference tests' mapping, tests/ood/test_detector_reference.py).

pytorch-ood's package `__init__` imports torchvision; its detector modules do not, and are imported by file the
same way as in the tests (tests/ood/pood.py).

Run from the repository root:

    python benchmarks/ood_detectors.py --run RUN_COPY --fit-limit 10000 --test 2000 --threads 1
    python benchmarks/ood_detectors.py --threads 1          # random features; writes results_ood_detectors.json
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


def peers(h: LinearHead, k: int, d: int, n: int, model: torch.nn.Module | None = None
          ) -> dict[str, tuple[dict[str, Any], Callable, Callable]]:
    """detector -> (dla options, pytorch-ood fit(train FeatureSet) -> fitted, score(fitted, FeatureSet) in dla's
    units). dla's units: higher = ID; Mahalanobis times n (pytorch-ood's scatter is not divided by n); GEN times K
    (it averages the top-M terms that the paper sums). `model`: also mahalanobis_pre, on the set's images."""
    det = pood.detector
    out: dict[str, tuple[dict[str, Any], Callable, Callable]] = {
        "mahalanobis": ({}, lambda t: det("mahalanobis").Mahalanobis(None).fit_features(t.features, t.labels),
                        lambda r, t: -n * r.predict_features(t.features)),
        "knn": ({"k": k}, lambda t: det("knn").KNN(None, k=k).fit_features(t.features, t.labels),
                lambda r, t: -r.predict_features(t.features)),
        "vim": ({"d": d}, lambda t: det("vim").ViM(None, d=d, w=h.weight, b=h.bias).fit_features(t.features,
                                                                                                 t.labels),
                lambda r, t: -r.predict_features(t.features)),
        "react": ({}, lambda t: det("react").ReAct(None, head=h, percentile=0.9).fit_feature_maps(t.features,
                                                                                                   t.labels),
                  lambda r, t: -r.predict_feature_maps(t.features)),
        "dice": ({}, lambda t: det("dice").DICE(None, h.weight, h.bias, p=0.9).fit_features(t.features, t.labels),
                 lambda r, t: -r.predict_features(t.features)),
        "ash": ({}, lambda t: det("ash").ASH(None, head=lambda m: h(m.flatten(1)), variant="ash-s",
                                             percentile=0.9),
                lambda r, t: -r.predict_feature_maps(t.features[:, :, None, None])),
        "entropy": ({}, lambda t: None, lambda r, t: -det("entropy").Entropy.score(h(t.features))),
        "gen": ({}, lambda t: None, lambda r, t: -h.weight.shape[0] * det("gen").GEN.score(h(t.features), M=100)),
    }
    if model is not None:
        eps = 0.002
        out["mahalanobis_pre"] = (
            {"eps": eps},
            lambda t: det("mahalanobis").MahalanobisODIN(model.penultimate, eps=eps).fit_features(t.features,
                                                                                                  t.labels),
            lambda r, t: -n * r.predict(t.inputs.float().div(255)).detach())
    return out


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
        r_fit, ref = timed(lambda: fit_ref(train))
        r_score, theirs = timed(lambda r=ref: score_ref(r, test))
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


# On real CIFAR-10 features at dla's default d = D/2, ViM's cut falls where neighbouring eigenvalues are ~1% apart
# (0.00666 vs 0.00673 with 17.4 the largest): pytorch-ood's float32 eigendecomposition mixes the two sides of the
# cut, dla's float64 one does not (dla's fit with a float32 eigh gives pytorch-ood's scores to 2e-4; with float64,
# dla's own to 4e-8). Its scores then differ by a few percent of their scale. GEN: pytorch-ood clamps the softmax
# probabilities to [1e-7, 1 - 1e-7], and the trained CNN's confident predictions lie beyond: (1 - p)^0.1 of
# 1 - p = 1e-9 is 0.13, clamped 0.2, so its scores differ by up to ~15% of their scale (the reference tests keep
# every probability inside the clamp and agree to 1e-5). mahalanobis_pre: dla clamps the stepped image to [0, 1]
# (as its ODIN does), pytorch-ood does not, and CIFAR-10 images have saturated pixels. Every other detector agrees
# to 1e-4.
TOLERANCE = {"vim": 0.1, "gen": 0.3, "mahalanobis_pre": 0.05}


def _agree(name: str, ours: torch.Tensor, theirs: torch.Tensor) -> float:
    theirs = theirs.double()
    scale = float(theirs.abs().max())
    diff = float((ours.double() - theirs).abs().max()) / scale
    if diff > TOLERANCE.get(name, 1e-4):
        raise SystemExit(f"{name}: dla and pytorch-ood disagree ({diff:.2e} of the scores' scale)")
    return diff


def random_sets(args: argparse.Namespace) -> tuple[FeatureSet, FeatureSet]:
    z, y = features(args.train, args.dim, args.classes, seed=1)
    zt, _ = features(args.test, args.dim, args.classes, seed=2)
    g = torch.Generator().manual_seed(3)
    w, b = 0.05 * torch.randn(args.classes, args.dim, generator=g), 0.1 * torch.randn(args.classes, generator=g)
    h = LinearHead(w, b)
    return FeatureSet(z, h(z), h, y), FeatureSet(zt, h(zt), h)


def run_sets(args: argparse.Namespace) -> tuple[FeatureSet, FeatureSet, Any]:
    """The run's training features (cached as `dla ood` caches them) and its first `--test` test images'."""
    from dla.data import resolve_data_root
    from dla.ood.features import extract, train_features
    from dla.train.restore import load_trained

    run = load_trained(args.run, resolve_data_root())
    train = train_features(run.path / "ood", run, args.fit_limit)
    return train, extract(run.model, run.splits.test.x[:args.test]), run


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=None, help="a trained run (a copy): its real features")
    p.add_argument("--fit-limit", type=int, default=10000, help="--run: training images fitted on (0 = all)")
    p.add_argument("--pre-test", type=int, default=500, help="--run: test images mahalanobis_pre is timed on")
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
    if args.run is not None:
        from dla.ood.detectors.vim import default_dim

        train, test, run = run_sets(args)
        width = train.features.shape[1]
        table = peers(train.head, k=50, d=default_dim(width), n=len(train), model=run.model.eval())
        setup = {"run": str(args.run), "fit_limit": args.fit_limit, "train": len(train), "test": len(test),
                 "dim": width, "classes": train.logits.shape[1], "pre_test": args.pre_test, "repeats": args.repeats}
    else:
        train, test = random_sets(args)
        table = peers(train.head, k=50, d=args.classes, n=args.train)
        setup = {k: getattr(args, k) for k in ("train", "test", "dim", "classes", "repeats")}
    results = {name: measure(name, train, test.select(slice(0, args.pre_test)) if name == "mahalanobis_pre"
                             else test, peer, args.repeats) for name, peer in table.items()}
    for name, r in results.items():
        print(f"{name:16s} fit {r['fit_s']['dla']:.3f} s vs {r['fit_s']['pytorch_ood']:.3f} s; score "
              f"{r['score_per_s']['dla']:,.0f} vs {r['score_per_s']['pytorch_ood']:,.0f} samples/s "
              f"({r['score_speedup']:.2f}x); max diff {r['max_rel_diff']:.1e}")
    import importlib.metadata

    info = machine_info(args.threads, torch.device("cpu"), pytorch_ood=importlib.metadata.version("pytorch-ood"))
    args.out.write_text(json.dumps({"machine": info, "setup": setup, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
