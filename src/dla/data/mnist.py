"""MNIST and Fashion-MNIST from the original gzipped IDX files (torchvision's raw/ layout)."""

from __future__ import annotations

import numpy as np
import torch

from dla.data.files import Checksum, DataError
from dla.data.registry import (
    ImageSet,
    LoadContext,
    RemoteFile,
    get_dataset,
    locate,
    read_verified,
    register_dataset,
)

MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

# sha256 of the *decompressed* IDX files.
_MNIST = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_FASHION = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


# Decompressed sizes (the same for MNIST and Fashion-MNIST): reading stops past them (a gzip bomb).
_SIZES = {"train-images-idx3-ubyte": 47_040_016, "train-labels-idx1-ubyte": 60_008,
          "t10k-images-idx3-ubyte": 7_840_016, "t10k-labels-idx1-ubyte": 10_008}


def _files(folder: str, sums: dict[str, str], mirrors: tuple[str, ...]) -> list[RemoteFile]:
    return [RemoteFile(f"{folder}/raw/{stem}.gz", Checksum("sha256", sha, size=_SIZES[stem]),
                       tuple(m + stem + ".gz" for m in mirrors)) for stem, sha in sums.items()]


def parse_idx(data: bytes, source: str) -> np.ndarray:
    """Decode an IDX file (magic: two zero bytes, dtype code 0x08 = uint8, number of dims)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{source} is not an unsigned-byte IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise DataError(f"{source} is truncated: IDX header promises shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _load_idx_pair(ctx: LoadContext, train: bool) -> ImageSet:
    spec = get_dataset(ctx.name)
    prefix = "train" if train else "t10k"
    wanted = [rf for rf in spec.files if f"/{prefix}-" in rf.path]
    paths = locate(spec, ctx.root, wanted)
    images_rf, labels_rf = sorted(wanted, key=lambda rf: "labels" in rf.path)
    images = parse_idx(read_verified(paths[images_rf.path], images_rf.checksum), str(paths[images_rf.path]))
    labels = parse_idx(read_verified(paths[labels_rf.path], labels_rf.checksum), str(paths[labels_rf.path]))
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{ctx.name}: {images.shape[0]} images but {labels.shape[0]} labels")
    x = torch.from_numpy(images.copy()).unsqueeze(1)  # (N, 1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64))
    classes = FASHION_CLASSES if ctx.name == "fashion_mnist" else [str(i) for i in range(10)]
    return ImageSet(x, y, list(classes))


register_dataset(
    "mnist",
    description="MNIST handwritten digits, 60k train / 10k test, 28x28 grey",
    mean=(0.1307,),
    std=(0.3081,),
    files=_files("MNIST", _MNIST, MNIST_MIRRORS),
)(_load_idx_pair)

register_dataset(
    "fashion_mnist",
    description="Fashion-MNIST clothing, 60k train / 10k test, 28x28 grey",
    mean=(0.2860,),
    std=(0.3530,),
    files=_files("FashionMNIST", _FASHION, FASHION_MIRRORS),
    system_dirs=("/usr/share/datasets/fashion-mnist",),  # Debian's dataset-fashion-mnist
)(_load_idx_pair)
