"""ImageFolder layout: `<path>/train/<class>/*.png` and `<path>/test/` (or `val/`) beside it.

Images are decoded once by a DataLoader with workers and kept as uint8 tensors, like the other datasets.
A folder without test/ or val/ gets a seeded 20% test split carved from train (see `splits.py`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dla.data.files import DataError
from dla.data.image_file import open_image_checked
from dla.data.registry import ImageSet, LoadContext, register_dataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm"}
TEST_FRACTION = 0.2


class _Decode(Dataset):
    def __init__(self, files: list[Path], size: int, channels: int) -> None:
        self.files, self.size, self.mode = files, size, "L" if channels == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        try:
            with open_image_checked(self.files[i]) as img:
                img = img.convert(self.mode)
                if self.size:
                    img = img.resize((self.size, self.size), Image.BILINEAR)
                arr = np.asarray(img, dtype=np.uint8)
        except OSError as exc:
            raise DataError(f"cannot decode image {self.files[i]}: {exc}") from None
        arr = arr[:, :, None] if arr.ndim == 2 else arr
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # (C, H, W)


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
    _, _, classes = scan(train_dir)
    split_dir = train_dir if train else next(root / s for s in ("test", "val") if (root / s).is_dir())
    files, labels, _ = scan(split_dir, classes)
    return ImageSet(decode_images(files, ctx, split_dir), torch.tensor(labels, dtype=torch.int64), classes)


def decode_images(files: list[Path], ctx: LoadContext, where: Path) -> torch.Tensor:
    """(N, C, H, W) uint8 images, decoded (and resized to data.image_size) in DataLoader workers."""
    # Batches come back as lists and are stacked here: an error inside a worker would carry its traceback.
    loader = DataLoader(_Decode(files, ctx.image_size, ctx.channels or 3), batch_size=256,
                        num_workers=ctx.workers, collate_fn=list)
    try:
        images = [img for batch in loader for img in batch]
    except DataError as exc:  # re-raised from a worker with the worker's traceback as its message
        last = str(exc).rstrip().splitlines()[-1]
        raise DataError(last.removeprefix(f"{DataError.__module__}.{DataError.__qualname__}: ")) from None
    sizes = sorted({tuple(img.shape) for img in images})
    if len(sizes) > 1:
        raise DataError(f"images under {where} differ in size (C, H, W = {sizes[0]}, {sizes[-1]}, ...); "
                        "set data.image_size to resize them")
    return torch.stack(images)
