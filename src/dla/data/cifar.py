"""CIFAR-10 and CIFAR-100 from the original Python pickles (`cifar-10-batches-py/`, `cifar-100-python/`).

The pickles are plain dicts of bytes, lists and a numpy array; they are read with an unpickler that refuses
every global except numpy's array reconstruction, so a hostile file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, ClassVar

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

_C10 = "cifar-10-batches-py"
_C100 = "cifar-100-python"
# MD5 values published with the datasets (the same ones torchvision checks).
_C10_FILES = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
_C100_FILES = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}


class _SafeUnpickler(pickle.Unpickler):
    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # Re-saved copies (Python 3 protocol 2 / 5) rebuild bytes and arrays through these; both only make
        # bytes or plain-dtype arrays from a buffer.
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR file")


def load_pickle(data: bytes, source: str) -> dict[str, Any]:
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:
        raise DataError(f"{source} is not a readable CIFAR pickle ({exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{source} is not a CIFAR batch (expected a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read(ctx: LoadContext, names: list[str]) -> list[dict[str, Any]]:
    spec = get_dataset(ctx.name)
    wanted = [rf for rf in spec.files if rf.path.rsplit("/", 1)[-1] in names]
    paths = locate(spec, ctx.root, wanted)
    return [load_pickle(read_verified(paths[rf.path], rf.checksum), str(paths[rf.path])) for rf in wanted]


def _names(values: list[Any]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _to_imageset(batches: list[dict[str, Any]], label_key: str, classes: list[str]) -> ImageSet:
    try:
        x = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches]).reshape(-1, 3, 32, 32)
        y = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
    except (KeyError, ValueError) as exc:
        raise DataError(f"CIFAR batch has an unexpected layout ({exc})") from None
    return ImageSet(torch.from_numpy(x.copy()), torch.from_numpy(y), classes)


def _files(folder: str, sums: dict[str, str]) -> list[RemoteFile]:
    return [RemoteFile(f"{folder}/{name}", Checksum("md5", md5)) for name, md5 in sums.items()]


@register_dataset(
    "cifar10",
    description="CIFAR-10, 50k train / 10k test, 32x32 colour, 10 classes",
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    files=_files(_C10, _C10_FILES),
    archive=RemoteFile("cifar-10-python.tar.gz", Checksum("md5", "c58f30108f718f92721af3b95e74349a", of_file=True),
                       ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)),
)
def load_cifar10(ctx: LoadContext, train: bool) -> ImageSet:
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    (meta,) = _read(ctx, ["batches.meta"])
    return _to_imageset(_read(ctx, names), "labels", _names(meta["label_names"]))


@register_dataset(
    "cifar100",
    description="CIFAR-100, 50k train / 10k test, 32x32 colour, 100 fine classes",
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    files=_files(_C100, _C100_FILES),
    archive=RemoteFile("cifar-100-python.tar.gz", Checksum("md5", "eb9058c3a382ffc7106e4002c42a8d85", of_file=True),
                       ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",)),
)
def load_cifar100(ctx: LoadContext, train: bool) -> ImageSet:
    (meta,) = _read(ctx, ["meta"])
    return _to_imageset(_read(ctx, ["train" if train else "test"]), "fine_labels",
                        _names(meta["fine_label_names"]))
