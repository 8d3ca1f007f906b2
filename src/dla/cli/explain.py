"""`dla explain`: saliency-style explanation grids (and their checks) for a trained run or a sweep."""

from __future__ import annotations

import argparse
from pathlib import Path

from dla.cli.options import Subparsers, add_data_root


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("explain", help="CAM / Grad-CAM / saliency / SmoothGrad / Integrated Gradients grids for a "
                                       "trained run's first test images")
    p.add_argument("run_dir", help="a run folder written by `dla run`, or a sweep folder (then every finished run, "
                                   "and each method's faithfulness as mean ± std over seeds)")
    p.add_argument("--method", "--methods", dest="method", default="all",
                   help="cam, gradcam, integrated_gradients, saliency, smoothgrad, a comma list, or all (default)")
    p.add_argument("--n", type=int, default=16, help="how many test images, the first N (default: 16)")
    p.add_argument("--target", default=None, help="class index or name to explain (default: each image's prediction)")
    p.add_argument("--layer", default=None, help="Grad-CAM layer, a name from model.named_modules() "
                                                 "(default: the block holding the last conv layer)")
    p.add_argument("--classmap", action="store_true", help="instead: the CNN as a fully-convolutional net on 2x2 "
                                                           "mosaics of test images, a class per location (--n mosaics)")
    p.add_argument("--metrics", action="store_true", help="also deletion and insertion AUC per method (Petsiuk "
                                                          "et al. 2018), mean ± std over the images")
    p.add_argument("--sanity", action="store_true", help="also the cascading model-randomisation check (Adebayo et "
                                                         "al. 2018): Spearman correlation per layer, sanity.png")
    add_data_root(p)
    p.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> None:
    from dla.data import resolve_data_root
    from dla.explain.base import ExplainError
    from dla.explain.grid import TITLES
    from dla.explain.run import Checks, checks_text, classmap_for_run, explain_path, explain_run
    from dla.report.collect import is_sweep_dir

    if (args.metrics or args.sanity) and args.classmap:
        raise ExplainError("--metrics and --sanity check the explanation methods' maps, not --classmap")
    if is_sweep_dir(Path(args.run_dir)):
        folder, text = explain_path(Path(args.run_dir), args.method, args.n, args.target, args.layer,
                                    resolve_data_root(args.data_root), classmap=args.classmap,
                                    checks=Checks(args.metrics, args.sanity))
        print(text, end="")
        print(f"explain folder: {folder}")
        return
    if args.classmap:
        path, agreement = classmap_for_run(Path(args.run_dir), min(args.n, 8), resolve_data_root(args.data_root))
        print(f"{path}\nlocations voting for the class of their own quadrant: {100 * agreement:.1f}%")
        return
    paths, results = explain_run(Path(args.run_dir), args.method, args.n, args.target, args.layer,
                                 resolve_data_root(args.data_root), args.metrics, args.sanity)
    for path in paths:
        print(path)
    if args.metrics or args.sanity:
        print(checks_text(results, {m: TITLES.get(m, m) for m in results["methods"]}), end="")
