"""MiniPlaces (Zhou et al., MIT 6.819/6.869 scene recognition): 100 scene classes, 128x128 images.

Layout, under the data root's `miniplaces/` (or `data.path`, under the root or absolute):

    images/train/a/abbey/00000001.jpg ...      images/val/00000001.jpg ...
    train.txt   "train/a/abbey/00000001.jpg 0"  one "relative/path label" line per image, paths under images/
    val.txt     "val/00000001.jpg 0"
    categories.txt (optional)  "/a/abbey 0"     class names; without it classes are named class_00, class_01, ...

The lists may also sit in `development_kit/data/`, where the official development kit puts them. The test
split's labels were never published, so `val.txt` serves as our test set and, as for every dataset, the
validation split is carved from train (data.val_size). Images are decoded and resized by the ImageFolder
decoder (`data.image_size`, default native) and kept as uint8 tensors: 100,000 training images take 4.9 GB
at 128 px and 1.2 GB at 64 px. Like ImageFolder's, the decoded images are cached outside the data root, keyed
by the listed files' paths, sizes and modification times and the decode settings (DLA_CACHE=off: no cache).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import torch

from dla.data.files import DataError
from dla.data.folder import decode_images
from dla.data.registry import ImageSet, LoadContext, register_dataset

HOME = "http://miniplaces.csail.mit.edu/"  # where the data and development kit are published
LIST_DIRS = ("", "development_kit/data", "data")  # where train.txt / val.txt / categories.txt may be


def miniplaces_root(ctx: LoadContext) -> Path:
    if ctx.path:
        path = Path(ctx.path).expanduser()
        root = path if path.is_absolute() else ctx.root / path
    else:
        root = ctx.root / "miniplaces"
    if not (root / "images").is_dir() or _find(root, "train.txt") is None:
        raise DataError(f"dataset 'miniplaces' not found at {root}: expected {root}/images/ and {root}/train.txt, "
                        f"val.txt (lines 'relative/path.jpg label'); get the data and development kit from {HOME} "
                        "and unpack them there, or set data.path to the folder that has them")
    return root


def _find(root: Path, name: str) -> Path | None:
    return next((root / d / name for d in LIST_DIRS if (root / d / name).is_file()), None)


def read_list(path: Path, images: Path) -> tuple[list[Path], list[int], list[int]]:
    """(files, labels, line numbers) of 'relative/path label' lines; every mistake names the file and line."""
    files, labels, numbers = [], [], []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{path} line {number}: expected 'relative/path.jpg label' (a path and an integer "
                            f"class index), got {line.strip()[:80]!r}")
        rel, label = PurePosixPath(parts[0]), int(parts[1])
        if rel.is_absolute() or ".." in rel.parts:  # a list must not reach outside images/
            raise DataError(f"{path} line {number}: {parts[0]!r} must be a path inside {images} (relative, no '..')")
        if label < 0:
            raise DataError(f"{path} line {number}: label {label} is negative; labels are class indices 0, 1, ...")
        files.append(images / rel)
        labels.append(label)
        numbers.append(number)
    if not files:
        raise DataError(f"{path} lists no images; expected lines 'relative/path.jpg label'")
    missing = [i for i, f in enumerate(files) if not f.is_file()]
    if missing:
        i = missing[0]
        raise DataError(f"{path} line {numbers[i]} names {files[i]}, which does not exist ({len(missing)} of "
                        f"{len(files)} listed images are missing); unpack the images under {images}")
    return files, labels, numbers


def read_classes(root: Path, train_labels: list[int]) -> list[str]:
    """Class names from categories.txt ('/a/abbey 0' -> 'abbey'), else class_00, class_01, ..."""
    path = _find(root, "categories.txt")
    if path is None:
        k = max(train_labels) + 1
        return [f"class_{i:0{len(str(k - 1))}d}" for i in range(k)]
    names: dict[int, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise DataError(f"{path} line {number}: expected '/a/abbey 0' (a category and its index), "
                            f"got {line.strip()[:80]!r}")
        cat = parts[0].strip("/").split("/")
        names[int(parts[1])] = "/".join(cat[1:] if len(cat) > 1 and len(cat[0]) == 1 else cat)  # '/a/abbey' -> 'abbey'
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{path} must number its categories 0 to N-1 once each; got indices "
                        f"{sorted(names)[:5]}...")
    return [names[i] for i in range(len(names))]


def decode(files: list[Path], ctx: LoadContext, where: Path) -> torch.Tensor:
    """(N, C, H, W) uint8 images, decoded and resized in DataLoader workers by ImageFolder's decoder (cached)."""
    return decode_images(files, ctx, where)


@register_dataset("miniplaces", description="MiniPlaces scenes, 100 classes (images/ + train.txt, val.txt as test)")
def load_miniplaces(ctx: LoadContext, train: bool) -> ImageSet:
    root = miniplaces_root(ctx)
    images = root / "images"
    train_list = _find(root, "train.txt")
    assert train_list is not None  # miniplaces_root checked it
    train_files, train_labels, train_lines = read_list(train_list, images)
    classes = read_classes(root, train_labels)  # from train.txt (or categories.txt) for both splits
    if train:
        files, labels, lines, where = train_files, train_labels, train_lines, train_list
    else:
        val_list = _find(root, "val.txt")
        if val_list is None:
            raise DataError(f"dataset 'miniplaces' at {root} has train.txt but no val.txt (our test split: MiniPlaces' "
                            f"test labels are not public); put val.txt beside train.txt")
        files, labels, lines = read_list(val_list, images)
        where = val_list
    bad = next((i for i, y in enumerate(labels) if y >= len(classes)), None)
    if bad is not None:
        raise DataError(f"{where} line {lines[bad]}: label {labels[bad]}, but there are only "
                        f"{len(classes)} classes (0 to {len(classes) - 1}, from "
                        f"{'categories.txt' if _find(root, 'categories.txt') else 'train.txt'})")
    return ImageSet(decode(files, ctx, where), torch.tensor(labels, dtype=torch.int64), classes)
