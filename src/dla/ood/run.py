"""`dla ood RUN_DIR`: score a trained classifier's test set (ID) against OOD sets with every requested method.

The run is rebuilt by `dla.train.restore.load_trained` (config, same splits, best weights). ID = the first
`limit` images of its test split; each OOD set (see `dla.ood.data`) is converted to the ID shape and cut to
`limit` images too. Everything is checked and loaded before anything is written, so a bad request fails with
one line and leaves RUN_DIR/ood/ as it was.

RUN_DIR/ood/ receives:
- results.json: settings, ID accuracy, and per OOD set and method: auroc, aupr_in, aupr_out, fpr95 (ID positive);
- table.md: the same as a markdown table, one row per (OOD set, method);
- confusion_id.png: the classifier's confusion matrix on the ID images scored;
- <set>/roc.png, <set>/pr.png: every method's curves overlaid; <set>/hist_<method>.png and
  <set>/sorted_<method>.png: ID vs OOD score distributions; <set>/confusion_ood.png: which ID classes the OOD
  inputs are predicted as (and, for a labelled OOD set, from which of its classes);
- autoencoder.pt / autoencoder_features.pt: the cached autoencoder of the `recon` score;
- with `--odin-grid`: odin_grid_<validation set>.png (heatmap of validation AUROC, T x eps, the chosen cell
  boxed) and .csv (every cell's four metrics), results.json["odin_grid"], and per OOD set an "odin tuned" row:
  ODIN at the validation-chosen (T, eps), scored on the same ID test / OOD test images as every other row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dla.ood.data import OODSource, load_ood_set, load_validation_set, parse_sources
from dla.ood.metrics import OODError
from dla.ood.metrics import metrics as ood_metrics
from dla.ood.odin_grid import EPS, TEMPERATURES, OdinGrid, eps_label, parse_values
from dla.ood.odin_grid import odin_grid as tune_odin
from dla.ood.scores import score, score_names

DEFAULT_METHODS = "msp,maxlogit,energy,odin"
COLUMNS = (("auroc", "AUROC"), ("aupr_in", "AUPR-in"), ("aupr_out", "AUPR-out"), ("fpr95", "FPR95"))
BATCH = 500  # images per forward pass: bounds memory, changes no score


@dataclass
class OODReport:
    folder: Path  # RUN_DIR/ood
    results: dict[str, Any]
    table: str
    paths: list[Path] = field(default_factory=list)  # every plot written


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """'msp,energy' (or a list) -> registered score names in the order given, each once."""
    words = [w.strip() for w in (text.split(",") if isinstance(text, str) else text)]
    known = score_names()
    unknown = [w for w in words if w not in known]
    if unknown or not words:
        raise OODError(f"unknown OOD method {(unknown or [''])[0]!r}; use a comma list of {', '.join(known)}")
    return list(dict.fromkeys(words))


def _check_request(methods: list[str], limit: int, temperature: float, eps: float, recon_features: bool,
                   recon_epochs: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise OODError(f"--limit must be a number of images per set >= 0 (0 = all); got {limit!r}")
    if "odin" in methods and not temperature > 0:
        raise OODError(f"--temperature must be > 0 (ODIN uses 1000); got {temperature!r}")
    if "odin" in methods and not eps >= 0:
        raise OODError(f"--eps must be >= 0 (a pixel-space step; ODIN uses 0.0014); got {eps!r}")
    if recon_features and "recon" not in methods:
        raise OODError("--recon-features applies to the recon score; add recon to --methods")
    if "recon" in methods and recon_epochs < 1:
        raise OODError(f"--recon-epochs must be >= 1; got {recon_epochs!r}")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> predicted classes (N,) of the model in eval mode."""
    return torch.cat([model(x[i: i + BATCH].float().div(255)).argmax(1) for i in range(0, len(x), BATCH)])


def _table(rows: list[tuple[str, str, dict[str, float]]], caption: str) -> str:
    lines = [caption, "", "| OOD set | method | " + " | ".join(h for _, h in COLUMNS) + " |",
             "|---|---|" + "---:|" * len(COLUMNS)]
    for name, method, m in rows:
        lines.append(f"| {name} | {method} | " + " | ".join(f"{m[k]:.4f}" for k, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _odin_val_sources(odin_val: str, tests: list[OODSource]) -> dict[str, OODSource]:
    """test set slug -> the OOD validation source its tuned ODIN point is chosen on."""
    if odin_val.strip() == "same":
        return {t.slug: t for t in tests}
    try:
        vals = parse_sources(odin_val)
    except OODError:
        raise OODError(f"unknown --odin-val {odin_val!r}; use same (each OOD set's own disjoint validation images) "
                       "or one OOD set name: noise, heldout, a dataset (its train split) or imagefolder:PATH") from None
    if len(vals) != 1:
        raise OODError(f"--odin-val {odin_val!r} names {len(vals)} sets; name one (or `same`)")
    return {t.slug: vals[0] for t in tests}


def ood_run(run_dir: str | Path, ood: str = "fashion_mnist,noise", methods: str | Sequence[str] = DEFAULT_METHODS,
            *, limit: int = 2000, temperature: float = 1000.0, eps: float = 0.0014, data_root: Path | None = None,
            seed: int = 0, recon_features: bool = False, recon_epochs: int = 3, recon_limit: int = 10000,
            odin_grid: bool = False, odin_val: str = "same",
            odin_temperatures: str | Sequence[float] = TEMPERATURES, odin_eps: str | Sequence[float] = EPS,
            log: Callable[[str], Any] = print) -> OODReport:
    """Score ID vs every OOD set with every method; write RUN_DIR/ood/ (see the module docstring).

    `odin_grid=True` also tunes ODIN (`dla.ood.odin_grid`) on validation data and adds an "odin tuned" row per
    OOD set. Validation ID = the run's validation split (carved from train, never the test images scored here).
    Validation OOD (`odin_val`): "same" (default) = for each test OOD set, disjoint images of the same source (a
    dataset's train split, another noise stream, the held-out classes' training images): Liang et al.'s protocol,
    which assumes a sample of the OOD distribution one will meet; or one named set for every test set (e.g.
    "noise"), the stricter protocol where the test OOD distribution is never seen."""
    from dla.data import resolve_data_root
    from dla.data.files import atomic_write
    from dla.ood.plots import (
        plot_histogram,
        plot_odin_grid,
        plot_ood_predictions,
        plot_pr,
        plot_roc,
        plot_sorted,
    )
    from dla.ood.recon import autoencoder_for_run, penultimate
    from dla.report.plots import plot_confusion
    from dla.runs import write_json
    from dla.tracking import progress
    from dla.train.metrics import classification_metrics, confusion_matrix
    from dla.train.restore import load_trained

    names = parse_methods(methods)
    sources = parse_sources(ood)
    _check_request(names, limit, temperature, eps, recon_features, recon_epochs)
    if not odin_grid and odin_val.strip() != "same":
        raise OODError(f"--odin-val {odin_val} applies to the ODIN grid; add --odin-grid")
    if odin_grid:
        grid_t = parse_values(odin_temperatures, "--odin-temperatures", minimum=0, strict=True)
        grid_e = parse_values(odin_eps, "--odin-eps", minimum=0, strict=False)
        val_of = _odin_val_sources(odin_val, sources)
    root = data_root or resolve_data_root()
    run = load_trained(run_dir, root)
    model, splits = run.model, run.splits
    shape, classes = splits.input_shape, splits.classes
    if recon_features and not callable(getattr(model, "features", None)):
        penultimate(model, torch.zeros(1, *shape))  # raises the one-line "has no features" error
    id_x = splits.test.x[:limit] if limit else splits.test.x  # (N, C, H, W) uint8
    id_y = splits.test.y[: len(id_x)]
    sets = {s.slug: (s, load_ood_set(s, root, shape, limit, seed, splits.heldout)) for s in sources}
    val_sets: dict[str, tuple[OODSource, Any]] = {}
    if odin_grid:
        if len(splits.val) == 0:
            raise OODError("--odin-grid tunes on the run's validation split, and this run has none "
                           "(data.val_size=0); retrain with a validation split")
        for v in dict.fromkeys(val_of.values()):
            val_sets[v.slug] = (v, load_validation_set(v, root, shape, limit, seed, id_dataset=splits.spec.name,
                                                       id_classes=list(run.cfg.data.classes or []),
                                                       test_sources=sources))

    out = run.path / "ood"
    options: dict[str, dict[str, Any]] = {m: {} for m in names}
    if "odin" in names:
        options["odin"] = {"temperature": temperature, "eps": eps}
    if "recon" in names:
        mode = "features" if recon_features else "pixels"
        train_x = splits.train.x[:recon_limit] if recon_limit else splits.train.x
        ae = autoencoder_for_run(out, train_x, mode, model, epochs=recon_epochs, seed=seed, log=log)
        options["recon"] = {"autoencoder": ae}

    def scores_of(x: torch.Tensor, what: str) -> dict[str, np.ndarray]:
        xf = x.float().div(255)
        # One bar step per score method (terminals only; CI logs keep the plain `log` lines).
        return {m: score(model, xf, m, batch_size=BATCH, **options[m]).double().numpy()
                for m in progress(names, total=len(names), desc=f"{what} scores")}

    log(f"scoring {len(id_x)} ID test images ({splits.spec.name}) with {', '.join(names)}...")
    id_scores = scores_of(id_x, "ID")
    id_pred = predict(model, id_x)
    cm = confusion_matrix(id_y, id_pred, len(classes))  # (K, K): row = true, column = predicted
    id_stats = classification_metrics(cm)

    run_name = f"{run.path.parent.name}/{run.path.name}"
    paths = [out / "confusion_id.png"]
    plot_confusion(cm.numpy(), classes, paths[0],
                   title=f"ID ({splits.spec.name}) test confusion, {100 * id_stats['accuracy']:.2f}% accuracy")
    rows: list[tuple[str, str, dict[str, float]]] = []
    results: dict[str, Any] = {
        "run": run_name,
        "id": {"dataset": splits.spec.name, "n": len(id_x), "accuracy": id_stats["accuracy"], "classes": classes},
        "settings": {"limit": limit, "seed": seed, "methods": names, "temperature": temperature, "eps": eps,
                     "recon": ({"mode": "features" if recon_features else "pixels", "epochs": recon_epochs,
                                "train_images": min(recon_limit or len(splits.train), len(splits.train))}
                               if "recon" in names else None)},
        "ood": {},
    }
    grids: dict[str, OdinGrid] = {}
    if odin_grid:
        id_val = splits.val.x[:limit] if limit else splits.val.x
        results["odin_grid"] = {"id_validation": {"split": "val", "n": len(id_val)}, "validation": odin_val,
                                "grids": {}}
        for vslug, (vsource, vdata) in val_sets.items():
            log(f"ODIN grid: {len(grid_t)} T x {len(grid_e)} eps on {len(id_val)} ID validation images and "
                f"{len(vdata)} {vsource.name} validation images...")
            g = tune_odin(model, id_val.float().div(255), vdata.x.float().div(255), grid_t, grid_e,
                          batch_size=BATCH, progress_desc=f"ODIN grid ({vsource.name})")
            grids[vslug] = g
            plot_odin_grid(g.metrics["auroc"], g.temperatures, [eps_label(e) for e in g.eps], g.chosen,
                           out / f"odin_grid_{vslug}.png",
                           f"{run_name}: ODIN validation AUROC, ID {splits.spec.name} val vs {vsource.name} "
                           f"(validation)\nchosen: T={g.chosen_temperature:g}, eps={eps_label(g.chosen_eps)}")
            with atomic_write(out / f"odin_grid_{vslug}.csv", "w") as f:
                f.write(g.to_csv())
            paths.append(out / f"odin_grid_{vslug}.png")
            results["odin_grid"]["grids"][vsource.name] = {"n_ood": len(vdata), **g.to_json()}
    tuned_name = "odin tuned"
    id_tuned: dict[str, np.ndarray] = {}

    for slug, (source, data) in sets.items():
        log(f"scoring {len(data)} OOD images ({source.name})...")
        ood_scores = scores_of(data.x, source.name)
        pred = predict(model, data.x).numpy()
        per_method = {m: ood_metrics(id_scores[m], ood_scores[m]) for m in names}
        rows += [(source.name, m, per_method[m]) for m in names]
        results["ood"][source.name] = {
            "n": len(data),
            "methods": per_method,
            "predicted_class_fraction": (np.bincount(pred, minlength=len(classes)) / len(pred)).tolist(),
        }
        pairs = {m: (id_scores[m], ood_scores[m]) for m in names}
        if odin_grid:  # the point chosen on validation data, now scored on the test pair
            vsource = val_of[slug]
            g = grids[vsource.slug]
            kw = {"temperature": g.chosen_temperature, "eps": g.chosen_eps}
            if vsource.slug not in id_tuned:
                id_tuned[vsource.slug] = score(model, id_x.float().div(255), "odin", batch_size=BATCH,
                                               **kw).double().numpy()
            tuned = score(model, data.x.float().div(255), "odin", batch_size=BATCH, **kw).double().numpy()
            m_tuned = ood_metrics(id_tuned[vsource.slug], tuned)
            label = f"{tuned_name} (T={g.chosen_temperature:g}, eps={eps_label(g.chosen_eps)})"
            rows.append((source.name, label, m_tuned))
            results["ood"][source.name]["odin_tuned"] = {"validation_ood": vsource.name, **kw, **m_tuned}
            pairs[tuned_name] = (id_tuned[vsource.slug], tuned)
        folder = out / slug
        title = f"{run_name}: ID {splits.spec.name} vs OOD {source.name}"
        plot_roc(pairs, folder / "roc.png", title)
        plot_pr(pairs, folder / "pr.png", title)
        paths += [folder / "roc.png", folder / "pr.png"]
        for m in [*names, *([tuned_name] if odin_grid else [])]:
            f = m.replace(" ", "_")
            plot_histogram(*pairs[m], folder / f"hist_{f}.png", m, source.name, title)
            plot_sorted(*pairs[m], folder / f"sorted_{f}.png", m, source.name, title)
            paths += [folder / f"hist_{f}.png", folder / f"sorted_{f}.png"]
        labelled = source.dataset != "noise"
        present = np.unique(data.y.numpy())
        plot_ood_predictions(
            pred, classes, folder / "confusion_ood.png",
            f"{run_name}: where {len(pred)} {source.name} images are classified",
            true=np.searchsorted(present, data.y.numpy()) if labelled else None,
            ood_classes=[data.classes[i] for i in present] if labelled else None)
        paths.append(folder / "confusion_ood.png")

    caption = (f"ID: {splits.spec.name} test ({len(id_x)} images, {100 * id_stats['accuracy']:.2f}% accuracy), "
               f"run {run_name}. ID is the positive class; FPR95 = OOD accepted at 95% ID kept (lower is better)."
               + (f" recon: {'feature' if recon_features else 'pixel'} autoencoder." if "recon" in names else "")
               + (f" odin: T={temperature:g}, eps={eps:g}." if "odin" in names else "")
               + (f" odin tuned: the best validation AUROC over {len(grid_t)} T x {len(grid_e)} eps, ID validation "
                  f"= the run's val split, OOD validation = "
                  + ("each set's own disjoint images (dataset train split / other noise stream / held-out "
                     "classes' train images)" if odin_val.strip() == "same" else
                     f"{next(iter(val_sets.values()))[0].name} (train split / other noise stream)") + "."
                  if odin_grid else ""))
    table = _table(rows, caption)
    with atomic_write(out / "table.md", "w") as f:
        f.write(table)
    write_json(out / "results.json", results)
    return OODReport(out, results, table, paths)
