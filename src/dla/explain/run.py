"""`dla explain RUN_DIR | SWEEP_DIR`: explain a trained run's first test images with every requested method.

The run is rebuilt from what it saved: config.yaml (data, model), the test split (the same seed, the same
files), and checkpoints/best.pt (weights only). Every map is computed before anything is written, so a bad
request (an MLP run and --method cam, an unknown layer) fails with one line and leaves no half-made grid.

Besides the grids, RUN_DIR/explain/ gets results.json and table.md: per method the Average Drop and Increase in
Confidence of its maps (`dla.explain.faithfulness`); with --metrics also deletion / insertion AUC, with --sanity
the cascading randomisation check and explain/sanity.png (`dla.explain.checks`). A sweep folder (as `dla attack`
takes one): every finished run is explained, and SWEEP_DIR/explain/summary.md holds the confidence numbers (or,
with --classmap, the quadrant agreement) as mean ± sample std over the runs of each config.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from dla.explain.base import ExplainError, explain, find_layer, method_class, method_names
from dla.explain.grid import TITLES, plot_explanations


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """'all', 'cam', 'cam,saliency' (or a list of names) -> known method names, in the registry's order."""
    words = [w.strip() for w in (text.split(",") if isinstance(text, str) else text)]
    known = method_names()
    if "all" in words:
        return known
    unknown = [w for w in words if w not in known]
    if unknown or not words:
        raise ExplainError(f"unknown explanation method {(unknown or [''])[0]!r}; use one of {', '.join(known)}, a "
                           "comma list of them, or all")
    return [m for m in known if m in words]


def takes_layer(method: str) -> bool:
    """Whether a registered method reads a layer chosen with --layer (Grad-CAM and its kin)."""
    return "layer" in inspect.signature(method_class(method).__init__).parameters


def parse_target(target: int | str | None, classes: Sequence[str]) -> int | None:
    """A class index or a class name (case-insensitive) -> index, checked against the run's classes."""
    from dla.train.restore import parse_class

    return None if target is None else parse_class(target, classes, "target", ExplainError)


def load_run_model(run_dir: Path, data_root: Path) -> tuple[nn.Module, torch.Tensor, torch.Tensor, list[str]]:
    """The run's model with its best weights (eval mode, CPU), and its test images (N, C, H, W) uint8, labels (N,)
    and class names (the run folder is checked and loaded by `dla.train.restore.load_trained`)."""
    from dla.train.restore import load_trained

    run = load_trained(run_dir, data_root)
    return run.model, run.splits.test.x, run.splits.test.y, run.splits.classes


def explain_run(run_dir: str | Path, methods: str | Sequence[str] = "all", n: int = 16,
                target: int | str | None = None, layer: str | None = None, data_root: Path | None = None,
                metrics: bool = False, sanity: bool = False) -> tuple[list[Path], dict[str, Any]]:
    """Write RUN_DIR/explain/<method>.png for every method (image, heatmap, overlay per test image) and, for
    more than one method, all.png with the methods side by side; and results.json / table.md with each method's
    faithfulness numbers: with `metrics` also deletion / insertion AUC, with `sanity` the cascading
    randomisation check (and sanity.png). Returns the paths of the files drawn, and the results."""
    from dla.data import resolve_data_root

    names = _check_request(methods, n, layer)
    return _explain_loaded(Path(run_dir), *load_run_model(Path(run_dir), data_root or resolve_data_root()), names,
                           n, target, layer, Checks(metrics, sanity))


def _check_request(methods: str | Sequence[str], n: int, layer: str | None) -> list[str]:
    names = parse_methods(methods)
    if layer is not None and not any(takes_layer(m) for m in names):
        layered = ", ".join(m for m in method_names() if takes_layer(m))
        raise ExplainError(f"--layer {layer!r} only applies to the layer methods ({layered}); add one with "
                           "--method gradcam (or all)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ExplainError(f"--n must be a positive number of test images; got {n!r}")
    return names


class Checks(NamedTuple):
    """The optional evidence of `dla explain RUN`: --metrics (deletion / insertion AUC), --sanity (randomisation)."""

    metrics: bool = False
    sanity: bool = False


def _explain_loaded(run_dir: Path, model: nn.Module, test_x: torch.Tensor, test_y: torch.Tensor, classes: list[str],
                    names: list[str], n: int, target: int | str | None, layer: str | None,
                    checks: Checks | None = None) -> tuple[list[Path], dict[str, Any]]:
    """The grids, results.json and table.md of one loaded run: (paths of the figures, results)."""
    from dla.explain.faithfulness import confidence_change

    checks = checks or Checks()
    t = parse_target(target, classes)
    x = test_x[:n].float().div(255)  # (N, C, H, W) in [0, 1]: the first n test images
    y = test_y[:n]
    with torch.inference_mode():
        pred = model(x).argmax(dim=1)  # (N,)

    def maps_of(m: nn.Module) -> dict[str, torch.Tensor]:  # every method's maps (N, H, W) of model m
        return {k: explain(m, x, k, t, **({"layer": layer} if takes_layer(k) else {})) for k in names}

    maps, seconds = timed_maps(model, x, names, t, layer)
    explained = pred if t is None else torch.full_like(pred, t)  # the class each map explains
    scores = {m: confidence_change(model, x, maps[m], explained) for m in names}

    results: dict[str, Any] = {"methods": scores, "maps_per_s": {m: len(x) / seconds[m] for m in names}}
    if checks.metrics:
        from dla.explain.checks import curve_scores

        results["curves"] = curve_scores(model, x, maps, explained)
    if checks.sanity:
        from dla.explain.checks import sanity_per_image
        from dla.explain.sanity import cascade_layers, cascade_spearman, nan_mean

        layers = cascade_layers(model)
        rhos = cascade_spearman(model, maps_of, layers)
        results["sanity"] = {"layers": layers, "spearman": {m: [nan_mean(r) for r in rs] for m, rs in rhos.items()},
                             "per_image": sanity_per_image(rhos)}

    out = run_dir / "explain"  # every number is computed: now the files
    what = f"class {t} ({classes[t]})" if t is not None else "the predicted class"
    run_name = f"{run_dir.parent.name}/{run_dir.name}"
    labels = {m: TITLES.get(m, m) + (f" at {find_layer(model, layer)[0]}" if takes_layer(m) else "") for m in names}
    paths = [plot_explanations(x, {m: maps[m]}, y.tolist(), pred.tolist(), classes, out / f"{m}.png",
                               title=f"{labels[m]} of {what}: {run_name}") for m in names]
    if len(names) > 1:
        paths.append(plot_explanations(x, maps, y.tolist(), pred.tolist(), classes, out / "all.png",
                                       title=f"{', '.join(labels.values())} of {what}: {run_name}"))
    if checks.sanity:
        from dla.explain.checks import plot_sanity

        paths.append(plot_sanity(results["sanity"]["layers"], results["sanity"]["spearman"], out / "sanity.png",
                                 f"cascading randomisation, {len(x)} test images: {run_name}"))
    results = {"run": run_name, "n": len(x), "target": t, "explained": what, **results}
    _write_results(out, results, labels)
    return paths, results


def timed_maps(model: nn.Module, x: torch.Tensor, names: list[str], target: int | None, layer: str | None
               ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Every method's maps (N, H, W) of the images x, and the CPU seconds of this process each method took for all
    of them (the maps/s of the ranking: one call per method on the whole batch). CPU time, not wall time: on a
    shared machine other jobs do not slow it, and with one torch thread it is the time the method costs."""
    maps, seconds = {}, {}
    for k in names:
        start = time.process_time()
        maps[k] = explain(model, x, k, target, **({"layer": layer} if takes_layer(k) else {}))
        seconds[k] = max(time.process_time() - start, 1e-9)
    return maps, seconds


def _write_results(out: Path, results: dict[str, Any], labels: dict[str, str]) -> None:
    from dla.data.provenance import measured_caption
    from dla.explain.faithfulness import HEADERS, KEYS
    from dla.io import atomic_write, write_json
    from dla.report.tables import markdown_table
    from dla.runs import machine_here

    results["machine"] = machine_here()  # explanations run on the CPU
    write_json(out / "results.json", results)
    body = [[labels[m], *(f"{100 * v[k]:.2f}%" for k in KEYS)] for m, v in results["methods"].items()]
    text = (f"# {results['run']}: explanations of {results['explained']}\n\nFirst {results['n']} test images; each "
            "map masks its image (x * map) and the model's confidence in the explained class is read on both "
            f"(Chattopadhay et al. 2018).{measured_caption([results])}\n\n"
            + markdown_table(["Method", *(HEADERS[k] for k in KEYS)], body))
    text += checks_text(results, labels)
    with atomic_write(out / "table.md", "w") as f:
        f.write(text)


def checks_text(results: dict[str, Any], labels: dict[str, str]) -> str:
    """The --metrics and --sanity sections of table.md (empty without them)."""
    from dla.explain.checks import STEPS, curves_table, ranking_table, ranking_values, sanity_table

    text = ""
    if "curves" in results or "sanity" in results:
        values = ranking_values(results)
        text += (f"\n## Ranking\n\nMean ± std over the {results['n']} images (↓ lower is better, ↑ higher); "
                 "Spearman after randomising the head, and every learnt layer; maps/s: one call per method on the "
                 f"{results['n']} images, per CPU second of this process.\n\n"
                 + ranking_table([([labels[m]], v) for m, v in values.items()], ["Method"]))
    if "curves" in results:
        text += (f"\n## Deletion and insertion (Petsiuk et al. 2018)\n\nPixels ranked by the map and moved in {STEPS} "
                 "steps: deleted to black, or inserted into a blurred copy; area under p(explained class); mean "
                 f"± std over the {results['n']} images.\n\n" + curves_table(results["curves"], labels))
    if "sanity" in results:
        text += ("\n## Sanity check: cascading randomisation (Adebayo et al. 2018)\n\nMean Spearman rank "
                 "correlation of the maps with the trained model's, layers re-initialised from the head down "
                 "(cumulative; sanity.png has every step). Near 0 = the map depends on the weights.\n\n"
                 + sanity_table(results["sanity"], labels))
    return text


def classmap_for_run(run_dir: Path, n: int, data_root: Path) -> tuple[Path, float]:
    """RUN_DIR/explain/classmap.png: n mosaics of four test images, each location's class from the
    fully-convolutional view; returns the path and the fraction of locations that vote for their quadrant."""
    if n < 1:
        raise ExplainError(f"--n must be a positive number of mosaics; got {n}")
    return _classmap_loaded(run_dir, *load_run_model(run_dir, data_root), n)


def _classmap_loaded(run_dir: Path, model: nn.Module, test_x: torch.Tensor, test_y: torch.Tensor,
                     classes: list[str], n: int) -> tuple[Path, float]:
    from dla.explain.classmap import classmap_run, quadrant_agreement

    x = test_x[: 64 * n].float().div(255)
    y = test_y[: 64 * n]
    path = classmap_run(model, x, y, classes, run_dir / "explain" / "classmap.png", n,
                        title=f"fully-convolutional class map: {run_dir.parent.name}/{run_dir.name}")
    return path, quadrant_agreement(model, x, y, 32)


def explain_path(path: str | Path, methods: str | Sequence[str] = "all", n: int = 16,
                 target: int | str | None = None, layer: str | None = None, data_root: Path | None = None,
                 classmap: bool = False, checks: Checks | None = None) -> tuple[Path, str]:
    """`dla explain` on every finished run of a sweep folder: (SWEEP_DIR/explain, the mean ± std summary). With
    `checks` (--metrics, --sanity) each run gets its own ranking, and the summary ranks the methods by the mean
    ± std over the runs of each run's mean over its images."""
    from dla.data import resolve_data_root
    from dla.report.collect import finished_sweep_runs

    path, root = Path(path), data_root or resolve_data_root()
    names = _check_request(methods, n, layer) if not classmap else []
    if classmap and n < 1:
        raise ExplainError(f"--n must be a positive number of mosaics; got {n}")
    if classmap and checks is not None and any(checks):
        raise ExplainError("--metrics and --sanity check the explanation methods' maps, not --classmap")
    finished, unfinished = finished_sweep_runs(path)
    loaded = [(p, load_run_model(p, root)) for p in finished]  # every run checked before any is explained
    if classmap:
        rows = {p.name: {"quadrant_agreement": _classmap_loaded(p, *run, min(n, 8))[1]} for p, run in loaded}
        return _write_sweep(path, rows, unfinished, classmap, n, runs=finished)  # class maps: no machine record
    from dla.explain.checks import ranking_values, run_means

    results = {p.name: _explain_loaded(p, *run, names, n, target, layer, checks)[1] for p, run in loaded}
    rows = {name: r["methods"] for name, r in results.items()}
    ranking = ({name: run_means(ranking_values(r)) for name, r in results.items()}
               if checks is not None and any(checks) else None)
    return _write_sweep(path, rows, unfinished, classmap, n, ranking, runs=finished, measured=list(results.values()))


def _write_sweep(sweep: Path, rows: dict[str, dict[str, Any]], unfinished: list[Path], classmap: bool,
                 n: int, ranking: dict[str, dict[str, dict[str, float]]] | None = None,
                 runs: Sequence[Path] = (), measured: Sequence[dict[str, Any]] = ()) -> tuple[Path, str]:
    from dla.data.provenance import measured_caption, models_caption
    from dla.explain.faithfulness import HEADERS, KEYS
    from dla.io import atomic_write, write_json
    from dla.report.collect import group_name, read_jsons
    from dla.report.tables import fmt_mean_std, markdown_table

    configs: dict[str, list[dict[str, Any]]] = {}
    for name, r in rows.items():
        configs.setdefault(group_name(name), []).append(r)
    if classmap:
        header = ["Config", "Locations voting for their quadrant's class", "n"]
        body = [[c, fmt_mean_std("accuracy", [r["quadrant_agreement"] for r in rs]), str(len(rs))]
                for c, rs in configs.items()]
        what = f"Fully-convolutional class maps on {min(n, 8)} mosaics of 4 test images"
    else:
        methods = list(next(iter(rows.values())))
        header = ["Config", "Method", *(HEADERS[k] for k in KEYS), "n"]
        body = [[c, TITLES.get(m, m), *(fmt_mean_std("accuracy", [r[m][k] for r in rs]) for k in KEYS), str(len(rs))]
                for c, rs in configs.items() for m in methods]
        what = (f"The first {n} test images; each map masks its image (x * map) and the model's confidence in the "
                "explained class is read on both (Chattopadhay et al. 2018)")
    text = (f"# {sweep.parent.name}/{sweep.name}: explanations\n\n{what}; best checkpoint of each run; mean ± std "
            f"(sample std) over n runs.{models_caption(read_jsons(p / 'results.json' for p in runs))}"
            f"{measured_caption(measured)}\n\n"
            + markdown_table(header, body))
    if ranking:
        text += sweep_ranking_text(ranking, n)
    if unfinished:
        text += f"\nNot explained (unfinished runs): {', '.join(p.name for p in unfinished)}\n"
    folder = sweep / "explain"
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "results.json", {"sweep": str(sweep), "classmap": classmap, "n": n, "runs": rows,
                                         **({"ranking": ranking} if ranking else {})})
    with atomic_write(folder / "summary.md", "w") as f:
        f.write(text)
    return folder, text


def sweep_ranking_text(ranking: dict[str, dict[str, dict[str, float]]], n: int) -> str:
    """The ranking section of a sweep's summary.md: per config and method, mean ± sample std over the runs of
    each run's mean over its n images."""
    from dla.explain.checks import ranking_table
    from dla.report.collect import group_name

    configs: dict[str, list[dict[str, dict[str, float]]]] = {}
    for name, r in ranking.items():
        configs.setdefault(group_name(name), []).append(r)
    rows = [([c, TITLES.get(m, m), str(len(rs))], {k: [r[m][k] for r in rs] for k in rs[0][m]})
            for c, rs in configs.items() for m in rs[0]]
    return (f"\n## Ranking\n\nEach run's mean over its first {n} test images (deletion / insertion AUC, Petsiuk "
            "et al. 2018; Spearman correlation with the trained maps after randomising the head, and every learnt "
            "layer, Adebayo et al. 2018; maps per CPU second of one call per method), then mean ± sample std over "
            "the n runs (↓ lower is better, ↑ higher).\n\n" + ranking_table(rows, ["Config", "Method", "n"]))
