"""Train / validation / test splits: validation carved from train with a seeded permutation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dla.config import DataConfig
from dla.data.folder import TEST_FRACTION, has_test_split
from dla.data.registry import DatasetSpec, ImageSet, LoadContext, get_dataset, present
from dla.errors import ConfigError


@dataclass
class Splits:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    spec: DatasetSpec
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # With `data.classes`: the test images of the classes left out, with their original labels and names
    # (the "held-out classes" OOD set). None when every class is kept.
    heldout: ImageSet | None = None
    root: Path | None = None  # the data root they were read from (auxiliary sets are looked up there too)

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)


def _seeded_perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def keep_classes(data: ImageSet, keep: list[int]) -> tuple[ImageSet, ImageSet]:
    """(the examples of classes `keep`, relabelled 0..k-1 in `keep`'s order with their names; the rest, as is)."""
    k = len(data.classes)
    bad = [c for c in keep if not 0 <= c < k]
    if bad:
        raise ConfigError(f"config key 'data.classes' has {bad[0]}, which is not a class index of this dataset "
                          f"(0 to {k - 1}: {', '.join(data.classes[:12])}{', ...' if k > 12 else ''})")
    if len(set(keep)) != len(keep):
        raise ConfigError(f"config key 'data.classes' = {keep} lists a class twice; name each class once")
    if len(keep) < 2:
        raise ConfigError(f"config key 'data.classes' = {keep} keeps fewer than 2 classes; a classifier needs two")
    new_label = torch.full((k,), -1, dtype=torch.int64)  # old label -> new label, -1 = left out
    new_label[torch.tensor(keep)] = torch.arange(len(keep))
    mapped = new_label[data.y]
    inside = mapped >= 0
    kept = ImageSet(data.x[inside], mapped[inside], [data.classes[c] for c in keep])
    return kept, data.subset(torch.nonzero(~inside).flatten())


def resolve_name(cfg: DataConfig, root: Path) -> str:
    """data.name, or data.fallback when data.name's files are absent and the fallback's are present."""
    if cfg.fallback and not present(get_dataset(cfg.name), root) and present(get_dataset(cfg.fallback), root):
        return cfg.fallback
    return cfg.name


def load_splits(cfg: DataConfig, root: Path, seed: int) -> Splits:
    """Load a dataset and split it; the test set is only read here and used once at the end."""
    spec = get_dataset(resolve_name(cfg, root))
    ctx = LoadContext(root=root, name=spec.name, image_size=cfg.image_size, channels=cfg.channels,
                      path=cfg.path, seed=seed, workers=cfg.workers)
    full = spec.load(ctx, True)
    if spec.name == "imagefolder" and not has_test_split(ctx):
        perm = _seeded_perm(len(full), seed + 1)
        n_test = max(1, int(len(full) * TEST_FRACTION))
        test, full = full.subset(perm[:n_test].sort().values), full.subset(perm[n_test:].sort().values)
    else:
        test = spec.load(ctx, False)
    if len(test) and bool((test.y < 0).any()):  # e.g. tiny_imagenet's test images: no accuracy can be measured
        raise ConfigError(f"dataset {cfg.name!r} has an unlabelled test split, so no run can be tested on it; use it "
                          f"as an out-of-distribution set instead (dla ood RUN_DIR --ood {cfg.name})")
    heldout = None
    if cfg.classes:  # before the limits, so limit_train counts examples of the kept classes
        full, _ = keep_classes(full, cfg.classes)
        test, heldout = keep_classes(test, cfg.classes)
    if cfg.limit_train:
        full = full.subset(torch.arange(min(cfg.limit_train, len(full))))
    if cfg.limit_test:
        test = test.subset(torch.arange(min(cfg.limit_test, len(test))))
        if heldout is not None:
            heldout = heldout.subset(torch.arange(min(cfg.limit_test, len(heldout))))
    if cfg.val_size >= len(full):
        raise ConfigError(f"config key 'data.val_size' = {cfg.val_size} leaves no training data "
                          f"({len(full)} training examples); choose a value below {len(full)}")
    # Sorted indices keep the original order within each part, so the split depends on the seed alone.
    perm = _seeded_perm(len(full), seed)
    val = full.subset(perm[: cfg.val_size].sort().values)
    train = full.subset(perm[cfg.val_size:].sort().values)
    if spec.mean is not None and spec.std is not None:
        mean, std = spec.mean, spec.std
    else:  # statistics of the training images only, never of val or test
        xf = train.x.float().div_(255)
        mean = tuple(xf.mean(dim=(0, 2, 3)).tolist())
        std = tuple(xf.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    return Splits(train=train, val=val, test=test, spec=spec, mean=mean, std=std, heldout=heldout,
                  root=root)
