"""ImageFolder layout: `<path>/train/<class>/*.png` and `<path>/test/` (or `val/`) beside it.

Images are decoded by DataLoader workers (`decoding.py`) and kept as uint8 tensors, like the other datasets.
A folder without test/ or val/ gets a seeded 20% test split carved from train (see `splits.py`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from dla.data.decoding import decode_files
from dla.data.files import DataError
from dla.data.registry import ImageSet, LoadContext, register_dataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm"}
TEST_FRACTION = 0.2


def folder_root(ctx: LoadContext) -> Path:
    if not ctx.path:
        raise DataError("dataset 'imagefolder' needs data.path (a folder with train/<class>/ images)")
    path = Path(ctx.path)
    return path if path.is_absolute() else ctx.root / path


def scan(split_dir: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    if classes is None:
        classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    files, labels = [], []
    for label, cls in enumerate(classes):
        folder = split_dir / cls
        for f in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(label)
    if not files:
        raise DataError(f"no images found under {split_dir} (expected {split_dir}/<class>/<image>.png)")
    return files, labels, classes


def has_test_split(ctx: LoadContext) -> bool:
    root = folder_root(ctx)
    return (root / "test").is_dir() or (root / "val").is_dir()


@register_dataset("imagefolder", description="any ImageFolder tree under the data root (data.path)")
def load_imagefolder(ctx: LoadContext, train: bool) -> ImageSet:
    root = folder_root(ctx)
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"ImageFolder {root} has no train/ folder; expected {root}/train/<class>/<image>")
    files, labels, classes = scan(train_dir)
    split_dir = train_dir
    if not train:
        split_dir = next(root / s for s in ("test", "val") if (root / s).is_dir())
        files, labels, _ = scan(split_dir, classes)
    return ImageSet(decode_images(files, ctx, split_dir), torch.tensor(labels, dtype=torch.int64), classes)


def decode_images(files: list[Path], ctx: LoadContext, where: Path) -> torch.Tensor:
    """(N, C, H, W) uint8 images, decoded (and resized to data.image_size) in DataLoader workers."""
    return decode_files(files, ctx.image_size, ctx.channels or 3, ctx.workers, where)
