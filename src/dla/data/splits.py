"""Train / validation / test splits: validation carved from train with a seeded permutation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dla.config import DataConfig
from dla.data.folder import TEST_FRACTION, has_test_split
from dla.data.registry import DatasetSpec, ImageSet, LoadContext, get_dataset
from dla.errors import ConfigError


@dataclass
class Splits:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    spec: DatasetSpec
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)


def _seeded_perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def load_splits(cfg: DataConfig, root: Path, seed: int) -> Splits:
    """Load a dataset and split it; the test set is only read here and used once at the end."""
    spec = get_dataset(cfg.name)
    ctx = LoadContext(root=root, name=cfg.name, image_size=cfg.image_size, channels=cfg.channels,
                      path=cfg.path, seed=seed, workers=cfg.workers)
    full = spec.load(ctx, True)
    if cfg.name == "imagefolder" and not has_test_split(ctx):
        perm = _seeded_perm(len(full), seed + 1)
        n_test = max(1, int(len(full) * TEST_FRACTION))
        test, full = full.subset(perm[:n_test].sort().values), full.subset(perm[n_test:].sort().values)
    else:
        test = spec.load(ctx, False)
    if cfg.limit_train:
        full = full.subset(torch.arange(min(cfg.limit_train, len(full))))
    if cfg.limit_test:
        test = test.subset(torch.arange(min(cfg.limit_test, len(test))))
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
    return Splits(train=train, val=val, test=test, spec=spec, mean=mean, std=std)
