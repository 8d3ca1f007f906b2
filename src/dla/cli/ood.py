"""`dla ood`: out-of-distribution detection scores and detectors on a trained run or a sweep."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dla.cli.options import Subparsers, add_data_root


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("ood", help="OOD detection on a trained run: AUROC / AUPR / FPR95 per OOD set and score, "
                                   "ROC / PR / histogram plots")
    p.add_argument("run_dir", help="a run folder written by `dla run` (its test split is the ID set), or a sweep "
                                   "folder (then every finished run, and mean ± std over seeds)")
    p.add_argument("--ood", default="fashion_mnist,noise",
                   help="comma list of OOD sets: datasets (their test split, converted to the run's channels and "
                        "size; tiny_imagenet: its unlabelled test images), imagefolder:PATH, noise (uniform) and "
                        "gaussian (seeded), fgsm[:EPS] (the ID test images attacked at EPS, default 8/255), heldout "
                        "(classes a data.classes run left out) (default: fashion_mnist,noise)")
    p.add_argument("--group", action="append", default=None, metavar="SET=GROUP",
                   help="put an OOD set in a group of the table (near, far, adversarial or any word), instead of "
                        "its benchmark group against the run's dataset; repeatable")
    p.add_argument("--methods", default="msp,maxlogit,energy,odin",
                   help="comma list of scores (msp, maxlogit, energy, odin, recon) and feature-space detectors fitted "
                        "on the ID training set (mahalanobis, mahalanobis_pre, knn, vim, react, dice, ash, entropy, "
                        "gen), or all (default: msp,maxlogit,energy,odin)")
    p.add_argument("--fit-limit", type=int, default=0,
                   help="detectors: ID training images they are fitted on, the first N (default: 0 = all)")
    p.add_argument("--option", action="append", default=None, metavar="DETECTOR.OPTION=VALUE",
                   help="a detector's option, e.g. knn.k=10, react.percentile=0.95, mahalanobis_pre.eps=0.001 "
                        "(a number, a fraction a/b, true, false or none); repeatable")
    p.add_argument("--limit", type=int, default=2000, help="images per set, the first N (default: 2000; 0 = all)")
    p.add_argument("--temperature", type=float, default=1000.0, help="odin: softmax temperature (default: 1000)")
    p.add_argument("--eps", type=float, default=0.0014, help="odin: input step in pixel units (default: 0.0014)")
    p.add_argument("--recon-features", action="store_true",
                   help="recon: autoencode the classifier's penultimate features instead of the pixels")
    p.add_argument("--recon-epochs", type=int, default=3, help="recon: autoencoder training epochs (default: 3)")
    _add_odin_grid(p)
    p.add_argument("--amp", default="off", choices=["off", "bf16"],
                   help="bf16: every forward pass under bf16 autocast, faster and not exact; recorded in results.json "
                        "and the caption (default: off, float32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise set and the autoencoder (default: 0)")
    p.add_argument("--rescore", action="store_true",
                   help="a sweep folder: score every run again, even one whose ood/results.json answers the same "
                        "request on the same checkpoint (by default such a run is reused)")
    add_data_root(p)
    p.set_defaults(func=cmd_ood)


def _add_odin_grid(p: argparse.ArgumentParser) -> None:
    """--odin-grid and the validation set and grid it searches."""
    p.add_argument("--odin-grid", action="store_true",
                   help="tune ODIN: validation AUROC over --odin-temperatures x --odin-eps (heatmap, CSV), the best "
                        "point then reported on each test OOD set as an 'odin tuned' row")
    p.add_argument("--odin-val", default="same",
                   help="OOD validation set of --odin-grid (ID validation = the run's val split): same (default: "
                        "each OOD set's own disjoint images: a dataset's train split, another noise stream, the "
                        "held-out classes' train images) or one set for all, e.g. noise (never the test images)")
    p.add_argument("--odin-temperatures", default="1,2,5,10,20,50,100,200,500,1000",
                   help="--odin-grid temperatures (default: 1,2,5,10,20,50,100,200,500,1000)")
    p.add_argument("--odin-eps", default="0,0.5/255,1/255,2/255,3/255,4/255,5/255",
                   help="--odin-grid input steps in pixel units, fractions allowed (default: 0,0.5/255,1/255,2/255,"
                        "3/255,4/255,5/255)")


def cmd_ood(args: argparse.Namespace) -> None:
    from dla.data import resolve_data_root
    from dla.ood.run import make_request, ood_path

    request = make_request(args.ood, args.methods, limit=args.limit, temperature=args.temperature, eps=args.eps,
                           seed=args.seed, recon_features=args.recon_features, recon_epochs=args.recon_epochs,
                           odin_grid=args.odin_grid, odin_val=args.odin_val, odin_temperatures=args.odin_temperatures,
                           odin_eps=args.odin_eps, groups=args.group, fit_limit=args.fit_limit,
                           detector_options=args.option, amp=args.amp)
    folder, text = ood_path(Path(args.run_dir), request, resolve_data_root(args.data_root),
                            log=lambda line: print(line, file=sys.stderr, flush=True),  # stdout: the table only
                            rescore=args.rescore)
    print(text, end="")
    print(f"ood folder: {folder}")
