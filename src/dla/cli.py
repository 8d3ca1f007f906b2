"""The `dla` command line. It parses arguments and calls the library; the lab logic lives elsewhere.

A user mistake (`DlaError`) is printed on one line and exits 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from dla.errors import DlaError, RunDirError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise DlaError(f"{message} (see `{self.prog} --help`)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs", help="folder that holds <experiment>/<run>/ (default: runs)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: $DLA_DATA, else ./data)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dla", description="Deep Learning Applications labs as reproducible experiments.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="the experiment catalogue, one line each")
    p.add_argument("--models", action="store_true", help="list registered models instead")
    p.add_argument("--datasets", action="store_true", help="list registered datasets instead")

    p = sub.add_parser("run", help="train and test one experiment")
    p.add_argument("experiment", help="name from `dla list`, or a path to a .yaml file")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. optim.lr=0.01 train.epochs=5; a run "
                   "folder among them is the teacher to distil from (distill.teacher=FOLDER)")
    _common(p)

    p = sub.add_parser("sweep", help="a grid of runs with mean ± std over seeds")
    p.add_argument("experiment")
    p.add_argument("overrides", nargs="*", help="key=v1,v2 adds an axis; key=v fixes a value for every run")
    p.add_argument("--name", default="", help="sweep folder name; reuse it to continue an interrupted sweep")
    p.add_argument("--jobs", "-j", type=int, default=1,
                   help="points run at once, each in its own process (one GPU each when several are present; "
                        "default: 1, in this process)")
    p.add_argument("--launcher", choices=["local", "submitit"], default="local",
                   help="local: this machine (--jobs processes); submitit: one submitit job per point, on SLURM "
                        "where sbatch is found, else local processes (default: local)")
    p.add_argument("--submitit", action="append", default=[], metavar="KEY=VALUE",
                   help="a submitit executor parameter, repeatable: cluster=local, timeout_min=60, "
                        "slurm_partition=gpu, gpus_per_node=1, ...")
    _common(p)

    p = sub.add_parser("report", help="one self-contained HTML file (tables, curves, plots) for a run, several "
                                      "runs or a sweep; --out X.md or --markdown for the same tables as Markdown")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_OR_SWEEP_DIR",
                   help="run folders, sweep folders, or folders of runs (several: compared, seeds pooled)")
    p.add_argument("--out", default=None, help="the report file; its suffix picks the format: .html (HTML) or .md "
                                               "(Markdown only) (default: DIR/report.html for one folder, else "
                                               "./report.html)")
    p.add_argument("--markdown", action="store_true", help="with an HTML report, also write the same tables as "
                                                           "Markdown beside it (.md); with --out X.md, Markdown is "
                                                           "all there is")

    p = sub.add_parser("compare", help="two runs side by side: the config keys that differ, and their test metrics")
    p.add_argument("run_a")
    p.add_argument("run_b")

    p = sub.add_parser("show", help="print a run's or a sweep's summary table")
    p.add_argument("run_dir")

    p = sub.add_parser("lab", help="a whole lab in order (train, attack, OOD, ...) on a budget, resumable, into one "
                                   "HTML report with the verdicts against the lab reports")
    p.add_argument("lab", type=int, help="the lab's number (1, 2, 3)")
    p.add_argument("--budget", default="smoke",
                   help="smoke (minutes: a test of the pipeline), cpu (a few CPU hours) or full (the labs' sizes, "
                        "for a GPU); each lab's file src/dla/labs/labN.yaml lists its profiles (default: smoke)")
    _common(p)

    p = sub.add_parser("verdicts", help="every sweep's numbers against the lab reports' published ones: matched, "
                                        "beaten, below or not comparable, with the rule")
    p.add_argument("paths", nargs="*", default=["runs"],
                   help="sweep folders, or folders holding them (e.g. runs, runs/cnn_cifar10) (default: runs)")

    p = sub.add_parser("docs", help="refresh the tables of Markdown documents (docs/labs/*.md) from the run "
                                    "folders they quote (<!-- dla:table PATH [N] --> markers)")
    p.add_argument("files", nargs="+", help="Markdown documents to refresh in place")
    p.add_argument("--runs", default="runs", help="the folder the markers' paths are relative to (default: runs)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when a document is out of date")

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
    p.add_argument("--data-root", default=None, help="dataset folder (default: $DLA_DATA, else ./data)")

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
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--data-root", default=None, help="dataset folder (default: $DLA_DATA, else ./data)")

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
    p.add_argument("--amp", default="off", choices=["off", "bf16"],
                   help="bf16: every forward pass under bf16 autocast, faster and not exact; recorded in results.json "
                        "and the caption (default: off, float32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise set and the autoencoder (default: 0)")
    p.add_argument("--rescore", action="store_true",
                   help="a sweep folder: score every run again, even one whose ood/results.json answers the same "
                        "request on the same checkpoint (by default such a run is reused)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: $DLA_DATA, else ./data)")

    p = sub.add_parser("generate", help="sample text from a trained language-model run (task=lm), or from a "
                                        "Hugging Face causal LM with --model")
    p.add_argument("run_dir", nargs="?", default=None, help="a run folder written by `dla run dante_char`")
    p.add_argument("--model", default=None, help="instead of a run: a Hugging Face causal LM, a hub id (online) "
                                                 "or a local folder (e.g. DATA_ROOT/models/tiny-gpt2)")
    p.add_argument("--prompt", action="append", default=None,
                   help="text to continue; repeat for several prompts (a left-padded batch with --model)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to add to each prompt (default: 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature; 0 = greedy (default: 0.8)")
    p.add_argument("--top-k", type=int, default=50, help="sample among the k most likely tokens; 0 = all "
                                                         "(default: 50)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass; 1 = off (default: 0.95)")
    p.add_argument("--num-return-sequences", type=int, default=1, help="continuations per prompt (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed: the same seed gives the same text "
                                                       "(default: 0)")
    p.add_argument("--no-kv-cache", action="store_true", help="with a run: recompute the whole context for every "
                                                              "token (to compare tokens/s with the cache)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--data-root", default=None, help="dataset folder (default: $DLA_DATA, else ./data)")

    p = sub.add_parser("config", help="print the resolved config of an experiment (nothing is run)")
    p.add_argument("experiment")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--keys", action="store_true", help="list every key with its default and help")

    p = sub.add_parser("tokenize", help="a text's tokens and ids (Hugging Face tokenizer), words vs tokens, and the "
                                        "decoded round trip")
    p.add_argument("text")
    p.add_argument("--tokenizer", default="gpt2", help="hub id or local folder (default: gpt2; offline the data "
                                                       "root's gpt2_tokenizer/)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: $DLA_DATA, else ./data)")
    return parser


def cmd_list(args: argparse.Namespace) -> None:
    if args.models:
        from dla.models.registry import model_names, model_spec

        for name in model_names():
            print(f"{name:<20} {model_spec(name).description}")
        return
    if args.datasets:
        from dla.data import dataset_names, get_dataset
        from dla.text.datasets import TEXT_DATASETS

        for name in dataset_names():
            print(f"{name:<20} {get_dataset(name).description}")
        for name, text in sorted(TEXT_DATASETS.items()):
            print(f"{name:<20} {text.description} (task={text.task})")
        print(f"{'hf:<id>':<20} any Hugging Face text-classification dataset, or a local copy (save_to_disk "
              "folder, parquet, CSV); data.text_column / data.label_column (task=textcls)")
        return
    from dla.config import experiment_names, read_experiment

    for name in experiment_names():
        raw = read_experiment(name)
        kind = "sweep" if raw.get("sweep") else "run"
        print(f"{name:<20} {kind:<6} {raw.get('description', '')}")


def cmd_run(args: argparse.Namespace) -> None:
    from dla.config import load_config
    from dla.data import resolve_data_root
    from dla.distributed import launched_main
    from dla.tasks import run_experiment

    cfg = load_config(args.experiment, teacher_shorthand(args.overrides))
    run = run_experiment(cfg, Path(args.out) / cfg.experiment, resolve_data_root(args.data_root))
    if not launched_main():
        return
    print()
    print(run.summary.read_text())
    print(f"run folder: {run.path}")


def teacher_shorthand(overrides: list[str]) -> list[str]:
    """`dla run distill TEACHER_RUN_DIR`: a run folder among the overrides means `distill.teacher=` that folder.

    Checked before the key=value parse because sweep run folders have '=' in their names (variant=teacher,seed=0).
    """
    from dla.errors import ConfigError

    folders = [o for o in overrides if _is_dir(o)]
    if len(folders) > 1:
        raise ConfigError(f"{len(folders)} run folders given ({', '.join(folders)}); name one teacher run")
    for folder in folders:
        if not (Path(folder) / "config.yaml").is_file():
            raise ConfigError(f"{folder} is a folder but not a run folder (no config.yaml); give the teacher's run "
                              "folder, as printed by `dla run`")
    return [f"distill.teacher={json.dumps(o)}" if o in folders else o for o in overrides]  # quoted: any path


def _is_dir(text: str) -> bool:
    try:
        return Path(text).is_dir()
    except (OSError, ValueError):  # a name too long for the filesystem, a NUL byte: an override, not a folder
        return False


def cmd_sweep(args: argparse.Namespace) -> None:
    from dla.data import resolve_data_root
    from dla.distributed import launched_main
    from dla.sweep import run_sweep

    if args.name:  # joined under --out: `--name ../x` or an absolute path must not write outside it
        from dla.config import check_folder_name

        check_folder_name("sweep --name", args.name)
    if args.submitit and args.launcher != "submitit":
        raise DlaError("--submitit KEY=VALUE sets submitit's executor: add --launcher submitit")
    launcher = None
    if args.launcher == "submitit":
        from dla.sweep_submitit import parse_options

        launcher = parse_options(args.submitit)
    sweep_dir = run_sweep(args.experiment, args.overrides, Path(args.out), resolve_data_root(args.data_root),
                          args.name, jobs=args.jobs, submitit=launcher)
    if not launched_main():
        return
    print()
    print((sweep_dir / "summary.md").read_text())
    print(f"sweep folder: {sweep_dir}")


def cmd_show(args: argparse.Namespace) -> None:
    from dla.runs import RunDir

    path = Path(args.run_dir)
    if not path.is_dir():
        raise RunDirError(f"{path} is not a folder; pass a run or sweep folder such as runs/mnist_mlp/<run>")
    summary = path / "summary.md"
    if not summary.is_file():
        RunDir(path).read_results()  # raises the 'incomplete run' message when that is the reason
        raise RunDirError(f"{path} has no summary.md; is it a run or sweep folder written by dla?")
    print(summary.read_text(), end="")


def cmd_report(args: argparse.Namespace) -> None:
    from dla.report.html import write_report

    for path in write_report([Path(p) for p in args.run_dirs], Path(args.out) if args.out else None, args.markdown):
        print(path)


def cmd_compare(args: argparse.Namespace) -> None:
    from dla.compare import compare_runs

    print(compare_runs(Path(args.run_a), Path(args.run_b)), end="")


def cmd_lab(args: argparse.Namespace) -> None:
    from dla.labs import run_lab

    report = run_lab(args.lab, args.budget, Path(args.out), args.data_root)
    print(f"lab report: {report}")


def cmd_verdicts(args: argparse.Namespace) -> None:
    from dla.report.verdict import verdicts_text

    print(verdicts_text([Path(p) for p in args.paths]), end="")


def cmd_docs(args: argparse.Namespace) -> int:
    from dla.report.docs import refresh

    changed = refresh([Path(f) for f in args.files], Path(args.runs), check=args.check)
    for path in changed:
        print(f"{'out of date' if args.check else 'refreshed'}: {path}")
    if not changed:
        print(f"up to date: {len(args.files)} document(s)")
    return 1 if args.check and changed else 0


def cmd_config(args: argparse.Namespace) -> None:
    from dla.config import ExperimentConfig, dump_yaml, help_lines, load_config
    from dla.models.registry import model_config_class

    cfg = load_config(args.experiment, teacher_shorthand(args.overrides))
    if not args.keys:
        print(dump_yaml(cfg), end="")
        return
    lines = help_lines(ExperimentConfig) + help_lines(model_config_class(cfg.model.name), "model.")
    for key, default, text in lines:
        print(f"{key:<34} {default!s:<14} {text}")


def cmd_tokenize(args: argparse.Namespace) -> None:
    from dla.data import resolve_data_root
    from dla.text.hf import format_tokenized, tokenize_text

    result = tokenize_text(args.text, args.tokenizer, resolve_data_root(args.data_root))
    print(format_tokenized(result, args.tokenizer), end="")
    if not result.round_trip:
        raise DlaError(f"round trip differs: decoding the ids gives {result.decoded!r}, not the input "
                       f"{result.text!r} (tokenizer {args.tokenizer} normalises text, e.g. lower-cases it)")


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
    folder, text = attack_path(Path(args.run_dir), request, resolve_data_root(args.data_root))
    print(text, end="")
    print(f"attack folder: {folder}")


def cmd_attack_suite(args: argparse.Namespace) -> None:
    from dla.attacks.common import AttackError
    from dla.attacks.suite_run import make_suite_request, suite_path
    from dla.data import resolve_data_root

    given = {"--method": args.method, "--alpha": args.alpha, "--restarts": args.restarts,
             "--targeted": args.targeted, "--least-likely": args.least_likely or None,
             "--variant": None if args.variant == "standard" else args.variant,
             "--amp": None if args.amp == "off" else args.amp}  # the suite's robust accuracy stays float32
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


def cmd_generate(args: argparse.Namespace) -> None:
    from dla.data import resolve_data_root
    from dla.text.generate import Sampling

    if (args.run_dir is None) == (args.model is None):
        raise DlaError("give either a run folder (dla generate runs/dante_char/RUN) or --model ID_OR_FOLDER")
    if args.temperature < 0 or not 0 < args.top_p <= 1 or args.top_k < 0:
        raise DlaError("--temperature must be >= 0, --top-p in (0, 1] and --top-k >= 0")
    data_root = resolve_data_root(args.data_root)
    if args.model is not None:
        from dla.text.hf import generate_hf

        texts = generate_hf(args.model, args.prompt or [""], max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            num_return_sequences=args.num_return_sequences, seed=args.seed, data_root=data_root,
                            device=args.device)
        for i, outs in enumerate(texts):
            for j, text in enumerate(outs):
                print(f"--- prompt {i + 1}, sequence {j + 1}\n{text}")
        return
    from dla.text.sample_run import sample_run

    samples = sample_run(Path(args.run_dir), args.prompt or ["\n"], args.max_new_tokens,
                         Sampling(args.temperature, args.top_k, args.top_p), n=args.num_return_sequences,
                         seed=args.seed, use_cache=not args.no_kv_cache, device=args.device, data_root=data_root)
    for i, outs in enumerate(samples.texts):
        for j, text in enumerate(outs):
            if len(samples.texts) > 1 or len(outs) > 1:
                print(f"--- prompt {i + 1}, sequence {j + 1}")
            print(text)
    print(f"{samples.tokens} tokens in {samples.seconds:.2f} s: {samples.tokens_per_second:,.0f} tokens/s "
          f"({'no KV cache' if args.no_kv_cache else 'KV cache'})", file=sys.stderr)


COMMANDS = {"list": cmd_list, "run": cmd_run, "sweep": cmd_sweep, "show": cmd_show, "verdicts": cmd_verdicts,
            "docs": cmd_docs, "lab": cmd_lab, "config": cmd_config,
            "report": cmd_report, "compare": cmd_compare, "explain": cmd_explain, "attack": cmd_attack, "ood": cmd_ood,
            "tokenize": cmd_tokenize, "generate": cmd_generate}


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # torchrun and schedulers stop processes with SIGTERM; raising lets `finally` blocks and atomic writes
    # clean up instead of dying mid-write.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    ok, code = False, None
    try:
        parser = build_parser()
        # Overrides may come after options too (`dla run x --out d a=1`): collect the stray key=value words.
        args, extra = parser.parse_known_args(argv)
        stray = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
        if stray:
            parser.error(f"unrecognized arguments: {' '.join(stray)}")
        if extra:
            args.overrides = [*args.overrides, *extra]
        code = COMMANDS[args.command](args)  # None = success; `dla docs --check` returns 1 for "out of date"
        ok = True
    except DlaError as exc:
        print(f"dla: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside the training loop (which saves and explains how to resume)
        print("dla: interrupted", file=sys.stderr)
        return 130
    finally:
        if "torch.distributed" in sys.modules:  # joined by a torchrun launch; cheap to check otherwise
            from dla.distributed import shutdown

            shutdown(ok)
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
