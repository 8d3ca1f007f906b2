"""ImageFolder layout: `<path>/train/<class>/*.png` and `<path>/test/` (or `val/`) beside it.

Images are decoded by DataLoader workers (`decoding.py`) and kept as uint8 tensors, like the other datasets.
The decoded images are cached outside the data root (`cache.py`), keyed by every file's path, size and
modification time and the decode settings, so a second run on the same folder reads them in seconds; a file
added, removed or touched, or another data.image_size or data.channels, decodes again (DLA_CACHE=off: always).
A folder without test/ or val/ gets a seeded 20% test split carved from train (see `splits.py`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dla.data.cache import cache_key, cached_arrays
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


def class_names(split_dir: Path) -> list[str]:
    return sorted(d.name for d in split_dir.iterdir() if d.is_dir())


def scan(split_dir: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """(image files, labels, class names) under split_dir/<class>/, sorted by path within each class."""
    classes = class_names(split_dir) if classes is None else classes
    files: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        folder = split_dir / cls
        found = [f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES] if folder.is_dir() else []
        found.sort(key=lambda f: f.parts)  # the order of sorting the paths themselves, without Path.__lt__'s cost
        files += found
        labels += [label] * len(found)
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
    split_dir = train_dir if train else next(root / s for s in ("test", "val") if (root / s).is_dir())
    files, labels, classes = scan(split_dir, class_names(train_dir))  # the test split takes train's classes
    return ImageSet(decode_images(files, ctx, split_dir), torch.tensor(labels, dtype=torch.int64), classes)


def decode_images(files: list[Path], ctx: LoadContext, where: Path) -> torch.Tensor:
    """(N, C, H, W) uint8 images, decoded (and resized to data.image_size) in DataLoader workers, or read from
    the decoded-image cache when these files, unchanged, were decoded with these settings before."""
    from PIL import __version__ as pillow

    channels = ctx.channels or 3
    source = {"dataset": ctx.name, "where": os.path.abspath(where), "size": ctx.image_size, "channels": channels}
    parts = {**source, "decoder": f"Pillow {pillow}", "files": file_stamps(files)}
    # One label per folder and settings: an entry for an edited folder replaces the folder's older one.
    label = f"{ctx.name}-{cache_key(source)[:8]}"
    arrays = cached_arrays(label, parts, lambda: {"x": decode_files(files, ctx.image_size, channels, ctx.workers,
                                                                    where).numpy()}, replaces_older=True)
    return torch.from_numpy(arrays["x"])


def file_stamps(files: list[Path]) -> list[tuple[str, int, int]]:
    """(absolute path, size, mtime in ns) of each file: what the cached pixels depend on."""
    cwd = os.getcwd()
    stamps = []
    for f in files:
        path = os.fspath(f)
        path = path if os.path.isabs(path) else os.path.join(cwd, path)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise DataError(f"cannot read image {f}: {exc.strerror or exc}") from None
        stamps.append((path, st.st_size, st.st_mtime_ns))
    return stamps
