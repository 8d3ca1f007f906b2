"""Seeded noise images (torchvision FakeData-style): a sanity baseline and an OOD set."""

from __future__ import annotations

import torch

from dla.data.registry import ImageSet, LoadContext, register_dataset

TRAIN_SIZE, TEST_SIZE, NUM_CLASSES = 10_000, 2_000, 10


@register_dataset(
    "noise",
    description="uniform noise images with random labels, seeded (data.image_size, data.channels set the shape)",
    mean=None,
    std=None,
)
def load_noise(ctx: LoadContext, train: bool) -> ImageSet:
    size = ctx.image_size or 32
    channels = ctx.channels or 3
    n = TRAIN_SIZE if train else TEST_SIZE
    # Train and test draw from different streams, so the test noise is never seen in training.
    g = torch.Generator().manual_seed(ctx.seed * 2 + (0 if train else 1))
    x = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return ImageSet(x, y, [f"noise{i}" for i in range(NUM_CLASSES)])
