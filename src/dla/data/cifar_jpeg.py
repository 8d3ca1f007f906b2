"""CIFAR-10 as JPEG files (`cifar10_jpeg/cifar10-jpeg.tar.gz`): all 60,000 images, read from the archive in place.

The archive holds `train/<class>/NNNN.jpg` (5,000 per class) and `test/<class>/NNNN.jpg` (1,000 per class);
NNNN is the image's position within its class in the original files, and the label is the class folder's index
in CIFAR-10's `label_names`. The original interleaving of classes is not recoverable, so rows are ordered
round-robin over the classes by NNNN (see `decode_archive`). The images were re-encoded as JPEG (lossy, PSNR
25.6-36.2 dB against the originals), so every result on this dataset is labelled as measured on the JPEG
copy, never as the pickled benchmark (`cifar10`), which stays a dataset of its own.

The archive's sha256 is checked, the JPEGs are decoded once (about 7 s on one core) and the uint8 arrays are
cached outside the data root (`dla.data.cache`), keyed by that hash and the decode settings.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from dla.data.files import Checksum, DataError
from dla.data.registry import ImageSet, LoadContext, RemoteFile, register_dataset
from dla.data.tar_images import decode_image, decoded_archive, tar_members

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "test")
SHA256 = "45b041e867f5a40f79bfde38d3dd1fd511103d50068c1afecf6445e25234d4db"
SOURCE = "CIFAR-10, JPEG copy (re-encoded, lossy; not the pickled benchmark's pixels)"
_IMAGE = re.compile(r"\d{1,6}\.jpe?g")


def accept(name: str) -> bool:
    """Only `train/`, `test/`, their class folders and `NNNN.jpg` files inside those."""
    parts = name.rstrip("/").split("/")
    if parts[0] not in SPLITS or len(parts) > 3:
        return False
    if len(parts) >= 2 and parts[1] not in CLASSES:
        return False
    return len(parts) < 3 or bool(_IMAGE.fullmatch(parts[2]))


def decode_archive(path: Path, size: int = 0, channels: int = 3) -> dict[str, np.ndarray]:
    """{train_x, train_y, test_x, test_y}: (N, C, H, W) uint8 and (N,) int64.

    Rows interleave the classes (NNNN = 0000 of airplane, automobile, ..., truck, then 0001 of each), so the
    first N images (`data.limit_train`, `data.limit_test`) hold every class equally, as CIFAR's own files
    nearly do, and not N images of the first classes.
    """
    mode = "L" if channels == 1 else "RGB"
    found: dict[str, list[tuple[int, int, np.ndarray]]] = {s: [] for s in SPLITS}
    for name, data in tar_members(path, accept, max_member=64 << 10, max_total=512 << 20):
        split, cls, file = name.split("/")
        pixels = decode_image(data, name, path, mode=mode, shape=(32, 32), size=size)
        found[split].append((CLASSES.index(cls), int(file.split(".")[0]), pixels))
    out: dict[str, np.ndarray] = {}
    for split, items in found.items():
        if not items:
            raise DataError(f"{path} has no {split}/<class>/NNNN.jpg images; it is not the CIFAR-10 JPEG archive")
        items.sort(key=lambda t: (t[1], t[0]))  # image 0 of every class, then image 1, ...
        out[f"{split}_x"] = np.stack([p for _, _, p in items]).transpose(0, 3, 1, 2).copy()
        out[f"{split}_y"] = np.array([c for c, _, _ in items], dtype=np.int64)
    return out


@register_dataset(
    "cifar10_jpeg",
    description="CIFAR-10 as JPEG files (all 60k, lossy re-encode), 32x32 colour, 10 classes; from the tar.gz",
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    files=(RemoteFile("cifar10_jpeg/cifar10-jpeg.tar.gz", Checksum("sha256", SHA256, of_file=True)),),
    source=SOURCE,
)
def load_cifar10_jpeg(ctx: LoadContext, train: bool) -> ImageSet:
    arrays = decoded_archive(ctx, "the CIFAR-10 JPEG archive", decode_archive)
    split = "train" if train else "test"
    return ImageSet(torch.from_numpy(arrays[f"{split}_x"]), torch.from_numpy(arrays[f"{split}_y"]), list(CLASSES))
