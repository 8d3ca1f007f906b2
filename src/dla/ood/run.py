"""`dla ood RUN_DIR | SWEEP_DIR`: score a trained classifier's test set (ID) against OOD sets with every requested
method.

The run is rebuilt by `dla.train.restore.load_trained` (config, same splits, best weights). ID = the first
`limit` images of its test split; each OOD set (see `dla.ood.data`) is converted to the ID shape and cut to
`limit` images too. Everything is checked and loaded before anything is written, so a bad request fails with
one line and leaves RUN_DIR/ood/ as it was.

RUN_DIR/ood/ receives:
- results.json: settings, ID accuracy, and per OOD set its group and, per method: auroc, aupr_in, aupr_out, fpr95
  (ID positive) and `inverted` (AUROC <= 0.4, see `dla.ood.tables`); "groups": per group and method the mean
  of each metric over the group's sets;
- table.md: the same as a markdown table (`dla.ood.tables.ood_table`): one row per (OOD set, method), grouped
  near / far / adversarial, with per-group mean rows and inverted scores marked;
- confusion_id.png: the classifier's confusion matrix on the ID images scored;
- <set>/roc.png, <set>/pr.png: every method's curves overlaid; <set>/hist_<method>.png and
  <set>/sorted_<method>.png: ID vs OOD score distributions; <set>/confusion_ood.png: which ID classes the OOD
  inputs are predicted as (and, for a labelled OOD set, from which of its classes);
- autoencoder.pt / autoencoder_features.pt: the cached autoencoder of the `recon` score;
- features_train.pt: the ID training images' penultimate features and logits that the feature-space detectors
  (`dla.ood.detectors`: mahalanobis, knn, vim, react, ...) are fitted on, keyed by the checkpoint's sha256, so a
  second `dla ood` reuses them and a new checkpoint recomputes them;
- with `--odin-grid`: odin_grid_<validation set>.png (heatmap of validation AUROC, T x eps, the chosen cell
  boxed) and .csv (every cell's four metrics), results.json["odin_grid"], and per OOD set an "odin tuned" row:
  ODIN at the validation-chosen (T, eps), scored on the same ID test / OOD test images as every other row.

A sweep folder (as `dla attack` takes one): every finished run gets its RUN/ood/, then SWEEP_DIR/ood/ gets
summary.md (each row's metrics as mean ± sample std over the runs of each config) and results.json. A run whose
RUN/ood/results.json answers the same request on the same weights is reused, not scored again (`dla.ood.reuse`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dla.data.registry import ImageSet
from dla.nn.amp import amp_caption, check_amp, with_amp
from dla.ood.data import (
    NOISE,
    IDData,
    OODSource,
    load_ood_set,
    load_validation_set,
    parse_groups,
    parse_sources,
    validation_kind,
)
from dla.ood.detector_options import parse_detector_options
from dla.ood.detectors import Detector, detector_names, make_detector
from dla.ood.features import FeatureSet, extract, has_features, train_features
from dla.ood.metrics import OODError
from dla.ood.metrics import metrics as ood_metrics
from dla.ood.odin_grid import EPS, TEMPERATURES, OdinGrid, eps_label, parse_values
from dla.ood.odin_grid import odin_grid as tune_odin
from dla.ood.scores import score, score_many, score_names
from dla.ood.tables import INVERTED_AUROC, Row, groups_json, is_inverted, ood_table, table_rows
from dla.runtime import eval_batch_size

DEFAULT_METHODS = "msp,maxlogit,energy,odin"
TUNED = "odin tuned"


@dataclass
class OODReport:
    folder: Path  # RUN_DIR/ood
    results: dict[str, Any]
    table: str
    paths: list[Path] = field(default_factory=list)  # every plot written
    rows: list[Row] = field(default_factory=list)  # the table's rows, group means included


@dataclass(frozen=True)
class OODRequest:
    """A checked `dla ood` request; what depends on the run (the groups, the shapes) is resolved per run."""

    ood: str = "fashion_mnist,noise"
    methods: tuple[str, ...] = ("msp", "maxlogit", "energy", "odin")
    limit: int = 2000
    temperature: float = 1000.0
    eps: float = 0.0014
    seed: int = 0
    recon_features: bool = False
    recon_epochs: int = 3
    recon_limit: int = 10000
    odin_grid: bool = False
    odin_val: str = "same"
    grid_t: tuple[float, ...] = ()
    grid_e: tuple[float, ...] = ()
    groups: tuple[tuple[str, str], ...] = ()  # --group SET=GROUP overrides
    fit_limit: int = 0  # ID training images the detectors are fitted on, the first N (0 = all)
    detector_options: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()  # --option DETECTOR.OPTION=VALUE
    amp: str = "off"  # "bf16": every forward pass under bf16 autocast (dla.nn.amp); never the default

    def options_of(self, detector: str) -> dict[str, Any]:
        """The --option values given for `detector` (the others keep their defaults)."""
        return dict(dict(self.detector_options).get(detector, ()))


def method_names() -> list[str]:
    """Every registered score (`dla.ood.scores`) and then every detector (`dla.ood.detectors`)."""
    return score_names() + detector_names()


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """'msp,energy' (or a list; `all` = every score and detector) -> method names in the order given, each once."""
    words = [w.strip() for w in (text.split(",") if isinstance(text, str) else text)]
    known = method_names()
    words = [n for w in words for n in (known if w == "all" else [w])]
    unknown = [w for w in words if w not in known]
    if unknown or not words:
        raise OODError(f"unknown OOD method {(unknown or [''])[0]!r}; use a comma list of {', '.join(known)}, or all")
    return list(dict.fromkeys(words))


def make_request(ood: str = "fashion_mnist,noise", methods: str | Sequence[str] = DEFAULT_METHODS, *,
                 limit: int = 2000, temperature: float = 1000.0, eps: float = 0.0014, seed: int = 0,
                 recon_features: bool = False, recon_epochs: int = 3, recon_limit: int = 10000,
                 odin_grid: bool = False, odin_val: str = "same",
                 odin_temperatures: str | Sequence[float] = TEMPERATURES, odin_eps: str | Sequence[float] = EPS,
                 groups: Sequence[str] | None = None, fit_limit: int = 0,
                 detector_options: Sequence[str] | None = None, amp: str = "off") -> OODRequest:
    """Check everything that does not depend on the run, with the CLI's option names in the messages."""
    check_amp(amp)
    names = parse_methods(methods)
    group_map = parse_groups(list(groups or []))
    sources = parse_sources(ood, groups=group_map)  # names and --group checked once, before any run is loaded
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise OODError(f"--limit must be a number of images per set >= 0 (0 = all); got {limit!r}")
    if isinstance(fit_limit, bool) or not isinstance(fit_limit, int) or fit_limit < 0:
        raise OODError(f"--fit-limit must be a number of training images >= 0 (0 = all); got {fit_limit!r}")
    if "odin" in names and not temperature > 0:
        raise OODError(f"--temperature must be > 0 (ODIN uses 1000); got {temperature!r}")
    if "odin" in names and not eps >= 0:
        raise OODError(f"--eps must be >= 0 (a pixel-space step; ODIN uses 0.0014); got {eps!r}")
    if recon_features and "recon" not in names:
        raise OODError("--recon-features applies to the recon score; add recon to --methods")
    if "recon" in names and recon_epochs < 1:
        raise OODError(f"--recon-epochs must be >= 1; got {recon_epochs!r}")
    if not odin_grid and odin_val.strip() != "same":
        raise OODError(f"--odin-val {odin_val} applies to the ODIN grid; add --odin-grid")
    grid_t: list[float] = []
    grid_e: list[float] = []
    if odin_grid:
        grid_t = parse_values(odin_temperatures, "--odin-temperatures", minimum=0, strict=True)
        grid_e = parse_values(odin_eps, "--odin-eps", minimum=0, strict=False)
        _odin_val_sources(odin_val, sources)
    chosen = parse_detector_options(detector_options, names)
    return OODRequest(ood, tuple(names), limit, temperature, eps, seed, recon_features, recon_epochs, recon_limit,
                      odin_grid, odin_val, tuple(grid_t), tuple(grid_e), tuple(group_map.items()), fit_limit,
                      tuple((d, tuple(o.items())) for d, o in chosen.items()), amp)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> predicted classes (N,) of the model in eval mode."""
    n = eval_batch_size(model)
    with torch.inference_mode():
        return torch.cat([model(x[i: i + n].float().div(255)).argmax(1) for i in range(0, len(x), n)])


def _odin_val_sources(odin_val: str, tests: list[OODSource], id_dataset: str = "") -> dict[str, OODSource]:
    """test set slug -> the OOD validation source its tuned ODIN point is chosen on."""
    if odin_val.strip() == "same":
        return {t.slug: t for t in tests}
    try:
        vals = parse_sources(odin_val, id_dataset)
    except OODError:
        raise OODError(f"unknown --odin-val {odin_val!r}; use same (each OOD set's own disjoint validation images) "
                       "or one OOD set name: noise, gaussian, heldout, fgsm[:EPS], a dataset (its train split; "
                       "tiny_imagenet: its val images) or imagefolder:PATH") from None
    if len(vals) != 1:
        raise OODError(f"--odin-val {odin_val!r} names {len(vals)} sets; name one (or `same`)")
    return {t.slug: vals[0] for t in tests}


@dataclass
class _Job:
    """One run being evaluated: the model, its ID images and their scores, and what has been written."""

    req: OODRequest
    run: Any  # dla.train.restore.TrainedRun
    out: Path
    id_x: torch.Tensor  # (N, C, H, W) uint8: the ID test images scored
    options: dict[str, dict[str, Any]]
    id_scores: dict[str, np.ndarray] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)
    id_tuned: dict[str, np.ndarray] = field(default_factory=dict)  # validation slug -> tuned ODIN ID scores
    detectors: dict[str, Detector] = field(default_factory=dict)  # method name -> detector fitted on ID train

    @cached_property
    def model(self) -> nn.Module:  # one bf16 wrapper per job (--amp bf16), else the run's model itself
        return with_amp(self.run.model, self.req.amp)

    @property
    def name(self) -> str:
        return f"{self.run.path.parent.name}/{self.run.path.name}"

    def scores(self, x: torch.Tensor, what: str) -> dict[str, np.ndarray]:
        from dla.tracking import progress

        xf = x.float().div(255)
        # One forward pass gives every detector its features and logits, and one more every logit score
        # (msp, maxlogit, energy): `score_many`. The rest (odin, recon) run on their own.
        fs = extract(self.model, x, batch_size=eval_batch_size(self.model)) if self.detectors else None
        plain = {m: self.options[m] for m in self.req.methods if m not in self.detectors}
        out = score_many(self.model, xf, plain, batch_size=eval_batch_size(self.model)) if plain else {}
        # One bar step per method (terminals only; CI logs keep the plain `log` lines).
        return {m: (self.detectors[m].score(fs) if m in self.detectors else out[m]).double().numpy()
                for m in progress(self.req.methods, total=len(self.req.methods), desc=f"{what} scores")}


def ood_run(run_dir: str | Path, ood: str = "fashion_mnist,noise", methods: str | Sequence[str] = DEFAULT_METHODS,
            *, data_root: Path | None = None, log: Callable[[str], Any] = print, **options: Any) -> OODReport:
    """Score ID vs every OOD set with every method; write RUN_DIR/ood/ (see the module docstring).

    `options` are `make_request`'s: limit, temperature, eps, seed, recon_*, odin_grid, odin_val, odin_temperatures,
    odin_eps, groups, fit_limit, detector_options (["knn.k=10", ...], `dla.ood.detector_options`).
    `odin_grid=True` also tunes ODIN (`dla.ood.odin_grid`) on validation data and adds an "odin tuned" row per OOD
    set. Validation ID = the run's validation split (carved from train, never the test images
    scored here). Validation OOD (`odin_val`): "same" (default) = for each test OOD set, disjoint images of the
    same source (a dataset's train split, tiny_imagenet's val images, another noise stream, the held-out classes'
    training images, FGSM on the ID validation images): Liang et al.'s protocol, which assumes a sample of the OOD
    distribution one will meet; or one named set for every test set (e.g. "noise"), the stricter protocol where
    the test OOD distribution is never seen."""
    from dla.data import resolve_data_root
    from dla.train.restore import load_trained

    req = make_request(ood, methods, **options)
    root = data_root or resolve_data_root()
    return evaluate(load_trained(Path(run_dir), root), req, root, log)


def _load_sets(req: OODRequest, run: Any, root: Path, sources: list[OODSource], val_of: dict[str, OODSource],
               id_data: IDData) -> tuple[dict[str, tuple[OODSource, ImageSet]], dict[str, tuple[OODSource, ImageSet]]]:
    """(test OOD sets, ODIN validation OOD sets) by slug, all loaded before anything is written."""
    splits, shape = run.splits, run.splits.input_shape
    sets = {s.slug: (s, load_ood_set(s, root, shape, req.limit, req.seed, id_data)) for s in sources}
    val_sets: dict[str, tuple[OODSource, ImageSet]] = {}
    if req.odin_grid:
        if len(splits.val) == 0:
            raise OODError("--odin-grid tunes on the run's validation split, and this run has none "
                           "(data.val_size=0); retrain with a validation split")
        for v in dict.fromkeys(val_of.values()):
            val_sets[v.slug] = (v, load_validation_set(v, root, shape, req.limit, req.seed,
                                                       id_dataset=splits.spec.name,
                                                       id_classes=list(run.cfg.data.classes or []),
                                                       test_sources=sources, run=id_data))
    return sets, val_sets


def _score_options(req: OODRequest, run: Any, out: Path, log: Callable[[str], Any]) -> dict[str, dict[str, Any]]:
    from dla.ood.recon import autoencoder_for_run

    options: dict[str, dict[str, Any]] = {m: {} for m in req.methods}
    if "odin" in req.methods:
        options["odin"] = {"temperature": req.temperature, "eps": req.eps}
    if "recon" in req.methods:
        mode = "features" if req.recon_features else "pixels"
        train_x = run.splits.train.x[:req.recon_limit] if req.recon_limit else run.splits.train.x
        ae = autoencoder_for_run(out, train_x, mode, run.model, epochs=req.recon_epochs, seed=req.seed, log=log)
        options["recon"] = {"autoencoder": ae}
    return options


@dataclass
class Prepared:
    """One run's request checked and its data loaded, nothing written yet (`prepare`); `score_prepared` goes on."""

    run: Any  # dla.train.restore.TrainedRun
    req: OODRequest
    id_x: torch.Tensor  # (N, C, H, W) uint8: the ID test images scored
    val_of: dict[str, OODSource]  # test set slug -> its ODIN validation source
    sets: dict[str, tuple[OODSource, ImageSet]]
    val_sets: dict[str, tuple[OODSource, ImageSet]]


def prepare(run: Any, req: OODRequest, root: Path) -> Prepared:
    """Check `req` against a loaded run (`dla.train.restore.TrainedRun`) and load every OOD set; no writes."""
    from dla.ood.recon import penultimate

    splits = run.splits
    sources = parse_sources(req.ood, splits.spec.name, dict(req.groups))
    val_of = _odin_val_sources(req.odin_val, sources, splits.spec.name) if req.odin_grid else {}
    if req.recon_features and not callable(getattr(run.model, "features", None)):
        penultimate(run.model, torch.zeros(1, *splits.input_shape))  # raises the one-line "has no features" error
    for m in req.methods:
        if m in detector_names() and make_detector(m).needs_features and not has_features(run.model):
            raise OODError(f"--methods {m} reads penultimate features, and {type(run.model).__name__} has no "
                           "penultimate(x) with a linear head; drop it or use a cnn, resnet, mlp, vit or fastnet run")
    id_x = splits.test.x[:req.limit] if req.limit else splits.test.x
    id_data = IDData(run.model, ImageSet(id_x, splits.test.y[: len(id_x)], splits.classes), splits.val,
                     splits.heldout)
    sets, val_sets = _load_sets(req, run, root, sources, val_of, id_data)
    return Prepared(run, req, id_x, val_of, sets, val_sets)


def evaluate(run: Any, req: OODRequest, root: Path, log: Callable[[str], Any] = print) -> OODReport:
    """`dla ood` on one loaded run: everything checked and loaded, then scored and written to RUN_DIR/ood/."""
    return score_prepared(prepare(run, req, root), log)


def score_prepared(p: Prepared, log: Callable[[str], Any] = print) -> OODReport:
    """Score a prepared run with every method, tune ODIN if asked, and write RUN_DIR/ood/."""
    req, run = p.req, p.run
    out = run.path / "ood"
    job = _Job(req, run, out, p.id_x, _score_options(req, run, out, log))
    job.detectors = _fit_detectors(req, run, out, log)
    log(f"scoring {len(p.id_x)} ID test images ({run.splits.spec.name}) with {', '.join(req.methods)}...")
    job.id_scores = job.scores(p.id_x, "ID")
    results = _id_results(job)
    grids = _odin_grids(job, p.val_sets, results, log) if req.odin_grid else {}
    rows: list[Row] = []
    for source, data in p.sets.values():
        log(f"scoring {len(data)} OOD images ({source.name})...")
        set_rows, results["ood"][source.name] = _evaluate_set(job, source, data, grids, p.val_of)
        rows += set_rows
    results["groups"] = groups_json(rows)
    return _write(job, results, rows, p.val_sets)


def _fit_detectors(req: OODRequest, run: Any, out: Path, log: Callable[[str], Any]) -> dict[str, Detector]:
    """Every requested detector, fitted on the ID training features (extracted once, cached in `out`)."""
    names = [m for m in req.methods if m in detector_names()]
    if not names:
        return {}
    detectors = {m: make_detector(m, **req.options_of(m)) for m in names}
    train: FeatureSet | None = None
    if any(d.needs_fit for d in detectors.values()):
        train = train_features(out, run, req.fit_limit, log)
    for d in detectors.values():
        if d.needs_fit:  # the others score from the test features alone
            d.fit(train)
    return detectors


def _id_results(job: _Job) -> dict[str, Any]:
    """results.json's run, id and settings sections, and the ID confusion matrix plot."""
    from dla.report.plots import plot_confusion
    from dla.train.metrics import classification_metrics, confusion_matrix

    req, splits = job.req, job.run.splits
    cm = confusion_matrix(splits.test.y[: len(job.id_x)], predict(job.model, job.id_x), len(splits.classes))
    stats = classification_metrics(cm)  # cm (K, K): row = true, column = predicted
    job.paths.append(job.out / "confusion_id.png")
    plot_confusion(cm.numpy(), splits.classes, job.paths[-1],
                   title=f"ID ({splits.spec.name}) test confusion, {100 * stats['accuracy']:.2f}% accuracy")
    recon = ({"mode": "features" if req.recon_features else "pixels", "epochs": req.recon_epochs,
              "train_images": min(req.recon_limit or len(splits.train), len(splits.train))}
             if "recon" in req.methods else None)
    return {
        "run": job.name,
        "id": {"dataset": splits.spec.name, "n": len(job.id_x), "accuracy": stats["accuracy"],
               "classes": splits.classes},
        "settings": {"limit": req.limit, "seed": req.seed, "methods": list(req.methods),
                     "temperature": req.temperature, "eps": req.eps, "recon": recon,
                     "inverted_auroc": INVERTED_AUROC, "fit_limit": req.fit_limit, "amp": req.amp,
                     "detectors": {m: d.options() for m, d in job.detectors.items()}},
        "ood": {},
    }


def _odin_grids(job: _Job, val_sets: dict[str, tuple[OODSource, ImageSet]], results: dict[str, Any],
                log: Callable[[str], Any]) -> dict[str, OdinGrid]:
    """One T x eps grid per validation OOD set, on ID *validation* images (the run's val split) only."""
    from dla.io import atomic_write
    from dla.ood.plots import plot_odin_grid

    req, splits, out = job.req, job.run.splits, job.out
    id_val = splits.val.x[:req.limit] if req.limit else splits.val.x
    results["odin_grid"] = {"id_validation": {"split": "val", "n": len(id_val)}, "validation": req.odin_val,
                            "grids": {}}
    grids: dict[str, OdinGrid] = {}
    for vslug, (vsource, vdata) in val_sets.items():
        log(f"ODIN grid: {len(req.grid_t)} T x {len(req.grid_e)} eps on {len(id_val)} ID validation images and "
            f"{len(vdata)} {vsource.name} validation images...")
        g = tune_odin(job.model, id_val.float().div(255), vdata.x.float().div(255), req.grid_t, req.grid_e,
                      batch_size=eval_batch_size(job.model), progress_desc=f"ODIN grid ({vsource.name})")
        grids[vslug] = g
        plot_odin_grid(g.metrics["auroc"], g.temperatures, [eps_label(e) for e in g.eps], g.chosen,
                       out / f"odin_grid_{vslug}.png",
                       f"{job.name}: ODIN validation AUROC, ID {splits.spec.name} val vs {vsource.name} "
                       f"(validation)\nchosen: T={g.chosen_temperature:g}, eps={eps_label(g.chosen_eps)}")
        with atomic_write(out / f"odin_grid_{vslug}.csv", "w") as f:
            f.write(g.to_csv())
        job.paths.append(out / f"odin_grid_{vslug}.png")
        results["odin_grid"]["grids"][vsource.name] = {"n_ood": len(vdata), **g.to_json()}
    return grids


def _tuned(job: _Job, data: ImageSet, vsource: OODSource, g: OdinGrid) -> tuple[dict[str, Any], np.ndarray]:
    """ODIN at the grid's chosen (T, eps), on the ID test images and this OOD set: (metrics, OOD scores)."""
    kw: dict[str, Any] = {"temperature": g.chosen_temperature, "eps": g.chosen_eps,
                          "batch_size": eval_batch_size(job.model)}
    if vsource.slug not in job.id_tuned:
        job.id_tuned[vsource.slug] = score(job.model, job.id_x.float().div(255), "odin", **kw).double().numpy()
    tuned = score(job.model, data.x.float().div(255), "odin", **kw).double().numpy()
    del kw["batch_size"]
    m = ood_metrics(job.id_tuned[vsource.slug], tuned)
    return {"validation_ood": vsource.name, **kw, **m, "inverted": is_inverted(m)}, tuned


def _evaluate_set(job: _Job, source: OODSource, data: ImageSet, grids: dict[str, OdinGrid],
                  val_of: dict[str, OODSource]) -> tuple[list[Row], dict[str, Any]]:
    """One OOD set: its rows, its results.json entry, its plots."""
    names = job.req.methods
    ood_scores = job.scores(data.x, source.name)
    pred = predict(job.model, data.x).numpy()
    per_method = {m: ood_metrics(job.id_scores[m], ood_scores[m]) for m in names}
    rows = [Row(source.group, source.name, m, m, per_method[m]) for m in names]
    entry: dict[str, Any] = {
        "n": len(data),
        "group": source.group,
        "methods": {m: {**v, "inverted": is_inverted(v)} for m, v in per_method.items()},
        "predicted_class_fraction": (np.bincount(pred, minlength=len(job.run.splits.classes)) / len(pred)).tolist(),
    }
    if source.dataset == "fgsm":
        entry["eps"] = source.eps
    pairs = {m: (job.id_scores[m], ood_scores[m]) for m in names}
    if job.req.odin_grid:  # the point chosen on validation data, now scored on the test pair
        g = grids[val_of[source.slug].slug]
        entry["odin_tuned"], tuned = _tuned(job, data, val_of[source.slug], g)
        label = f"{TUNED} (T={g.chosen_temperature:g}, eps={eps_label(g.chosen_eps)})"
        rows.append(Row(source.group, source.name, TUNED, label,
                        {k: entry["odin_tuned"][k] for k in ("auroc", "aupr_in", "aupr_out", "fpr95")}))
        pairs[TUNED] = (job.id_tuned[val_of[source.slug].slug], tuned)
    _plot_set(job, source, data, pairs, pred)
    return rows, entry


def _plot_set(job: _Job, source: OODSource, data: ImageSet, pairs: dict[str, tuple[np.ndarray, np.ndarray]],
              pred: np.ndarray) -> None:
    from dla.ood.plots import plot_histogram, plot_ood_predictions, plot_pr, plot_roc, plot_sorted

    folder = job.out / source.slug
    title = f"{job.name}: ID {job.run.splits.spec.name} vs OOD {source.name}"
    plot_roc(pairs, folder / "roc.png", title)
    plot_pr(pairs, folder / "pr.png", title)
    job.paths += [folder / "roc.png", folder / "pr.png"]
    for m in pairs:
        f = m.replace(" ", "_")
        plot_histogram(*pairs[m], folder / f"hist_{f}.png", m, source.name, title)
        plot_sorted(*pairs[m], folder / f"sorted_{f}.png", m, source.name, title)
        job.paths += [folder / f"hist_{f}.png", folder / f"sorted_{f}.png"]
    # Noise has no classes, and tiny_imagenet's test images have no labels (-1): those get the bar chart only.
    labelled = source.dataset not in NOISE and bool((data.y >= 0).all())
    present = np.unique(data.y.numpy())
    plot_ood_predictions(
        pred, job.run.splits.classes, folder / "confusion_ood.png",
        f"{job.name}: where {len(pred)} {source.name} images are classified",
        true=np.searchsorted(present, data.y.numpy()) if labelled else None,
        ood_classes=[data.classes[i] for i in present] if labelled else None)
    job.paths.append(folder / "confusion_ood.png")


def _caption(job: _Job, results: dict[str, Any], val_sets: dict[str, tuple[OODSource, ImageSet]]) -> str:
    req, names = job.req, job.req.methods
    fitted = any(d.needs_fit for d in job.detectors.values())
    fit_n = min(req.fit_limit or len(job.run.splits.train), len(job.run.splits.train))
    used = "; ".join(f"{v.name}, {validation_kind(v)}" for v, _ in val_sets.values())
    grid = (f" odin tuned: the best validation AUROC over {len(req.grid_t)} T x {len(req.grid_e)} eps, ID validation "
            f"= the run's val split, OOD validation = {'each set' if req.odin_val.strip() == 'same' else 'one set'}'s "
            f"own images, never its test images ({used}).")
    return (f"ID: {results['id']['dataset']} test ({len(job.id_x)} images, {100 * results['id']['accuracy']:.2f}% "
            f"accuracy), run {job.name}. ID is the positive class; FPR95 = OOD accepted at 95% ID kept (lower is "
            "better). Groups as in OpenOOD (near: new classes, same kind of images; far: other kinds of images; "
            "adversarial: attacked ID images); a group's mean row averages its sets."
            + (f" recon: {'feature' if req.recon_features else 'pixel'} autoencoder." if "recon" in names else "")
            + (f" odin: T={req.temperature:g}, eps={req.eps:g}." if "odin" in names else "")
            + (f" Detectors fitted on {fit_n} ID training images' penultimate features: "
               f"{', '.join(m for m, d in job.detectors.items() if d.needs_fit)}." if fitted else "")
            + detector_caption({m: d.options() for m, d in job.detectors.items()})
            + (grid if req.odin_grid else "") + amp_caption(req.amp))


def detector_caption(options: dict[str, dict[str, Any]]) -> str:
    """' Detector options: knn k=50, react percentile=0.9.' for the detectors that have options, else ''."""
    parts = [f"{m} " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in o.items())
             for m, o in options.items() if o]
    return f" Detector options: {'; '.join(parts)}." if parts else ""


def _write(job: _Job, results: dict[str, Any], rows: list[Row],
           val_sets: dict[str, tuple[OODSource, ImageSet]]) -> OODReport:
    from dla.data.provenance import measured_caption
    from dla.io import atomic_write, write_json
    from dla.ood.reuse import fingerprint, rows_json
    from dla.runs import machine_here

    results["machine"] = machine_here()  # OOD scoring runs on the CPU
    table = ood_table(rows, _caption(job, results, val_sets) + measured_caption([results]))
    results["rows"] = rows_json(rows)
    results["fingerprint"] = fingerprint(job.req, job.run.path)  # lets `dla ood SWEEP_DIR` reuse this run
    with atomic_write(job.out / "table.md", "w") as f:
        f.write(table)
    write_json(job.out / "results.json", results)
    return OODReport(job.out, results, table, job.paths, table_rows(rows))


def ood_path(path: str | Path, req: OODRequest, data_root: Path | None = None,
             log: Callable[[str], Any] = print, rescore: bool = False) -> tuple[Path, str]:
    """`dla ood` on a run folder, or on every finished run of a sweep folder: (output folder, Markdown text)."""
    from dla.data import resolve_data_root
    from dla.ood.sweep import ood_sweep
    from dla.report.collect import is_sweep_dir
    from dla.train.restore import load_trained

    path, root = Path(path), data_root or resolve_data_root()
    if is_sweep_dir(path):
        return ood_sweep(path, req, root, log, rescore)
    report = evaluate(load_trained(path, root), req, root, log)
    return report.folder, report.table
