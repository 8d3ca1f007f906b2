"""Penultimate features and logits of a classifier, the input of every feature-space OOD detector.

A model exposes `penultimate(x) -> (B, D)` and a linear `head` with `head(penultimate(x)) == model(x)` (the image
models in `dla.models`; tests/models/test_registry.py checks it). `extract` runs the network once per image and
keeps both the features and the logits, so the detectors never run it again. `train_features` caches the ID
training set's extraction in RUN_DIR/ood/features_train.pt keyed by the checkpoint's sha256: a second `dla ood`
reuses it, a retrained or replaced checkpoint recomputes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dla.nn.modes import eval_frozen
from dla.ood.metrics import OODError
from dla.runtime import eval_batch_size


@dataclass(frozen=True)
class LinearHead:
    """The classifier's last layer: logits = features @ weight.T + bias."""

    weight: torch.Tensor  # (K, D)
    bias: torch.Tensor  # (K,); zeros for a head without bias

    def __call__(self, features: torch.Tensor) -> torch.Tensor:  # (N, D) -> (N, K)
        return features @ self.weight.T + self.bias


@dataclass(frozen=True)
class FeatureSet:
    """What the detectors see of N images: features (N, D) or None, logits (N, K), labels (N,) or None.

    `extract` also keeps the images and the model they went through (`inputs`, `model`), for the one kind of
    detector that must run the network again (input preprocessing, `mahalanobis_pre`); the cached training
    features have neither, and every other detector ignores them.
    """

    features: torch.Tensor | None  # float32, None for a model without `penultimate`
    logits: torch.Tensor  # float32
    head: LinearHead | None  # None for a model without `penultimate` and `head`
    labels: torch.Tensor | None = None  # int64, the ID training labels a detector is fitted with
    inputs: torch.Tensor | None = None  # (N, C, H, W) the images, uint8 or float in [0, 1], as given to `extract`
    model: nn.Module | None = None  # the network that gave `features` from `inputs`

    def __len__(self) -> int:
        return self.logits.shape[0]

    def select(self, index: slice | torch.Tensor) -> FeatureSet:
        """The samples `index` (a slice, or an index / boolean tensor) of every per-sample field."""

        def take(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[index]

        return FeatureSet(take(self.features), self.logits[index], self.head, take(self.labels), take(self.inputs),
                          self.model)


def linear_head(model: nn.Module) -> LinearHead | None:
    """The model's `head` as detached CPU float32 tensors, or None when it has no linear `head`."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        return None
    w = head.weight.detach().to("cpu", torch.float32)
    b = head.bias.detach().to("cpu", torch.float32) if head.bias is not None else torch.zeros(w.shape[0])
    return LinearHead(w, b)


def has_features(model: nn.Module) -> bool:
    return callable(getattr(model, "penultimate", None)) and linear_head(model) is not None


@torch.no_grad()
def extract(model: nn.Module, x: torch.Tensor, labels: torch.Tensor | None = None, *,
            batch_size: int | None = None) -> FeatureSet:
    """Images (N, C, H, W), uint8 or float in [0, 1] -> their FeatureSet, the model in eval mode (restored after).

    The FeatureSet keeps a reference to `x` and `model` (no copy), see `FeatureSet.inputs`.

    A model without `penultimate` gives logits only (features and head None): the logit detectors still work.
    `batch_size`: images per forward pass (default: `dla.runtime.eval_batch_size`).
    """
    batch_size = batch_size or eval_batch_size(model)
    head = linear_head(model) if callable(getattr(model, "penultimate", None)) else None
    feats, logits = [], []
    with eval_frozen(model):
        for chunk in x.split(batch_size):
            xf = chunk.float().div(255) if not chunk.is_floating_point() else chunk.float()
            if head is None:
                logits.append(model(xf).float().cpu())
                continue
            f = model.penultimate(xf).float().cpu()  # (B, D)
            feats.append(f)
            logits.append(head(f))  # the model's logits without a second pass (the contract test checks it)
    labels = None if labels is None else labels.long().cpu()
    if head is None:
        return FeatureSet(None, torch.cat(logits) if logits else torch.empty(0, 0), None, labels, x, model)
    k, d = head.weight.shape
    return FeatureSet(torch.cat(feats) if feats else torch.empty(0, d),
                      torch.cat(logits) if logits else torch.empty(0, k), head, labels, x, model)


def checkpoint_key(path: Path) -> str:
    """sha256 of the checkpoint file: what a cached extraction was computed with."""
    from dla.data.files import file_digest

    return file_digest(path, "sha256")


def train_features(folder: Path, run: Any, limit: int = 0, log: Callable[[str], Any] = print) -> FeatureSet:
    """The run's ID training FeatureSet (the first `limit` images, 0 = all), cached in `folder`/features_train.pt.

    The cache holds the checkpoint's sha256 and the image count: a changed checkpoint or limit recomputes it.
    """
    from dla.train.checkpoint import load_cache, save_checkpoint

    train = run.splits.train
    x, y = (train.x[:limit], train.y[:limit]) if limit else (train.x, train.y)
    key = {"checkpoint_sha256": checkpoint_key(run.path / "checkpoints" / "best.pt"), "n": len(x),
           "shape": list(x.shape[1:])}
    path = folder / "features_train.pt"
    state = load_cache(path, "key", key, "training features", log)
    if state is not None:
        return FeatureSet(state["features"], state["logits"], linear_head(run.model), state["labels"])
    log(f"extracting penultimate features of {len(x)} ID training images (cached in {path.name})...")
    fs = extract(run.model, x, y)
    save_checkpoint(path, {"kind": "features", "key": key, "features": fs.features, "logits": fs.logits,
                           "labels": fs.labels})
    return fs


def check_features(fs: FeatureSet, who: str) -> torch.Tensor:
    """fs.features, or one line saying the model has none."""
    if fs.features is None or fs.head is None:
        raise OODError(f"detector {who!r} reads penultimate features, and this model has no penultimate(x) method "
                       "with a linear head; use a cnn, resnet, mlp, vit, fastnet or simplenet run, or a logit score")
    return fs.features
