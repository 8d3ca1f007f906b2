"""`dla attack`: one adversarial attack (--method) or an ensemble (--suite) on a trained run or a sweep."""

from __future__ import annotations

import argparse
from pathlib import Path

from dla.cli.options import Subparsers, add_data_root, add_device


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("attack", help="FGSM / PGD on a trained run (or every run of a sweep): robust accuracy "
                                      "per eps, table, plot, image grid")
    p.add_argument("run_dir", help="a run folder written by `dla run`, or a sweep folder (then every finished run, "
                                   "and mean ± std over seeds)")
    p.add_argument("--method", default=None, help="registered attack: fgsm, pgd, apgd-ce, apgd-dlr, apgd-t, pgd-l2, "
                                                  "cw-l2, deepfool, square, fab-t (default: pgd)")
    p.add_argument("--suite", default=None, help="instead of --method, an ensemble: autoattack (AutoAttack's "
                                                 "standard APGD-CE, APGD-T, FAB-T, Square) or autoattack-fast "
                                                 "(APGD-CE + APGD-T); worst case per image, masking checks")
    p.add_argument("--queries", type=int, default=None, help="square (and --suite autoattack): Square's query "
                                                             "budget (default: 5000)")
    p.add_argument("--no-checks", action="store_true", help="--suite: skip the gradient-masking probes")
    p.add_argument("--eps", default=None,
                   help="comma list of radii in pixel units (L_inf; L2 lengths for pgd-l2, cw-l2, deepfool), "
                        "fractions allowed "
                        "(default: 0,1/255,2/255,4/255,8/255; with --suite: 8/255)")
    p.add_argument("--steps", type=int, default=None, help="pgd: steps (default: 10)")
    p.add_argument("--alpha", default=None, help="pgd: step size, e.g. 1/255 (default: 2.5 * eps / steps)")
    p.add_argument("--restarts", type=int, default=None, help="pgd: random restarts, the strongest kept (default: 1)")
    p.add_argument("--targeted", default=None, metavar="CLASS", help="attack toward this class (index or name)")
    p.add_argument("--least-likely", action="store_true", help="attack each image toward its least-likely class")
    p.add_argument("--variant", default="standard", help="targeted loss: standard, ovo (one-vs-one) or ovr "
                                                          "(one-vs-rest) (default: standard)")
    p.add_argument("--n", "--limit", dest="n", type=int, default=None,
                   help="attack the first N test images (default: the run's whole test split)")
    p.add_argument("--batch-size", type=int, default=256, help="images attacked at once (default: 256)")
    p.add_argument("--grid", type=int, default=8, help="images in grid.png (default: 8; 0 = no grid)")
    p.add_argument("--seed", type=int, default=0, help="seed of PGD's random starts (default: 0)")
    p.add_argument("--amp", default="off", choices=["off", "bf16"],
                   help="bf16: the model under bf16 autocast, faster and not exact, never the reference for robust "
                        "accuracy; recorded in results.json, the table and the folder name (default: off)")
    p.add_argument("--rescore", action="store_true",
                   help="a sweep: attack every run again, even one already attacked with this request on the same "
                        "checkpoint (by default such a run is reused)")
    add_device(p)
    add_data_root(p)
    p.set_defaults(func=cmd_attack)


def cmd_attack(args: argparse.Namespace) -> None:
    from dla.attacks.run import DEFAULT_EPS, attack_path, make_request
    from dla.data import resolve_data_root

    if args.suite is not None:
        return cmd_attack_suite(args)
    method = "pgd" if args.method is None else args.method
    eps = DEFAULT_EPS if args.eps is None else args.eps
    request = make_request(method, eps, steps=args.steps, alpha=args.alpha,
                           restarts=args.restarts, targeted=args.targeted, variant=args.variant,
                           least_likely=args.least_likely, n=args.n, batch_size=args.batch_size, grid=args.grid,
                           seed=args.seed, device=args.device, amp=args.amp, queries=args.queries)
    folder, text = attack_path(Path(args.run_dir), request, resolve_data_root(args.data_root), rescore=args.rescore)
    print(text, end="")
    print(f"attack folder: {folder}")


def cmd_attack_suite(args: argparse.Namespace) -> None:
    from dla.attacks.common import AttackError
    from dla.attacks.suite_run import make_suite_request, suite_path
    from dla.data import resolve_data_root

    given = {"--method": args.method, "--alpha": args.alpha, "--restarts": args.restarts,
             "--targeted": args.targeted, "--least-likely": args.least_likely or None,
             "--variant": None if args.variant == "standard" else args.variant,
             "--amp": None if args.amp == "off" else args.amp,
             "--rescore": args.rescore or None}  # the suite's robust accuracy stays float32
    clash = [k for k, v in given.items() if v is not None]
    if clash:
        raise AttackError(f"--suite runs its own attacks: drop {', '.join(clash)} (--steps, --queries, --eps, --n, "
                          f"--seed apply)")
    request = make_suite_request(args.suite, "8/255" if args.eps is None else args.eps, steps=args.steps,
                                 queries=args.queries, n=args.n,
                                 batch_size=args.batch_size, seed=args.seed, device=args.device,
                                 checks=not args.no_checks)
    folder, text = suite_path(Path(args.run_dir), request, resolve_data_root(args.data_root))
    print(text, end="" if text.endswith("\n") else "\n")
    print(f"attack folder: {folder}")
