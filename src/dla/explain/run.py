"""`dla explain RUN_DIR`: explain a trained run's first test images with every requested method.

The run is rebuilt from what it saved: config.yaml (data, model), the test split (the same seed, the same
files), and checkpoints/best.pt (weights only). Every map is computed before anything is written, so a bad
request (an MLP run and --method cam, an unknown layer) fails with one line and leaves no half-made grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from dla.explain.base import ExplainError, explain, find_layer, method_names
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
                target: int | str | None = None, layer: str | None = None, data_root: Path | None = None
                ) -> list[Path]:
    """Write RUN_DIR/explain/<method>.png for every method (image, heatmap, overlay per test image) and, for
    more than one method, all.png with the methods side by side. Returns the paths written."""
    from dla.data import resolve_data_root

    names = parse_methods(methods)
    if layer is not None and "gradcam" not in names:
        raise ExplainError(f"--layer {layer!r} only applies to gradcam; add it with --method gradcam (or all)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ExplainError(f"--n must be a positive number of test images; got {n!r}")
    run_dir = Path(run_dir)
    model, test_x, test_y, classes = load_run_model(run_dir, data_root or resolve_data_root())
    t = parse_target(target, classes)

    x = test_x[:n].float().div(255)  # (N, C, H, W) in [0, 1]: the first n test images
    y = test_y[:n]
    with torch.no_grad():
        pred = model(x).argmax(dim=1)  # (N,)
    maps = {m: explain(model, x, m, t, **({"layer": layer} if m == "gradcam" else {})) for m in names}

    out = run_dir / "explain"
    what = f"class {t} ({classes[t]})" if t is not None else "the predicted class"
    run_name = f"{run_dir.parent.name}/{run_dir.name}"
    labels = {m: TITLES.get(m, m) + (f" at {find_layer(model, layer)[0]}" if m == "gradcam" else "") for m in names}
    paths = [plot_explanations(x, {m: maps[m]}, y.tolist(), pred.tolist(), classes, out / f"{m}.png",
                               title=f"{labels[m]} of {what}: {run_name}") for m in names]
    if len(names) > 1:
        paths.append(plot_explanations(x, maps, y.tolist(), pred.tolist(), classes, out / "all.png",
                                       title=f"{', '.join(labels.values())} of {what}: {run_name}"))
    return paths


def classmap_for_run(run_dir: Path, n: int, data_root: Path) -> tuple[Path, float]:
    """RUN_DIR/explain/classmap.png: n mosaics of four test images, each location's class from the
    fully-convolutional view; returns the path and the fraction of locations that vote for their quadrant."""
    from dla.explain.classmap import classmap_run, quadrant_agreement

    if n < 1:
        raise ExplainError(f"--n must be a positive number of mosaics; got {n}")
    model, test_x, test_y, classes = load_run_model(run_dir, data_root)
    x = test_x[: 64 * n].float().div(255)
    y = test_y[: 64 * n]
    path = classmap_run(model, x, y, classes, run_dir / "explain" / "classmap.png", n,
                        title=f"fully-convolutional class map: {run_dir.parent.name}/{run_dir.name}")
    return path, quadrant_agreement(model, x, y, 32)
