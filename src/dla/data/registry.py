"""The dataset registry: one decorator enrols a dataset, with its classes and normalisation.

A dataset is a function `load(ctx, train) -> ImageSet` returning uint8 images (N, C, H, W) and int64
labels. Files are found under the data root in torchvision's familiar layout, or in a system folder
(Debian's dataset packages), or downloaded when online; `locate` does that search for every dataset.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from dla.data.files import Checksum, DataError, download, read_bytes, verify
from dla.data.root import offline
from dla.registry import Registry


@dataclass
class ImageSet:
    x: torch.Tensor  # (N, C, H, W) uint8
    y: torch.Tensor  # (N,) int64
    classes: list[str]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: torch.Tensor) -> ImageSet:
        return ImageSet(self.x[index], self.y[index], self.classes)


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the data root, e.g. "MNIST/raw/train-images-idx3-ubyte.gz"
    checksum: Checksum | None
    urls: tuple[str, ...] = ()


@dataclass
class LoadContext:
    """What a loader gets: where the data root is, and the data section of the config."""

    root: Path
    name: str
    image_size: int = 0
    channels: int = 0
    path: str = ""
    seed: int = 0
    workers: int = 0


@dataclass
class DatasetSpec:
    name: str
    description: str
    load: Callable[[LoadContext, bool], ImageSet]
    mean: tuple[float, ...] | None  # None: computed from the training images
    std: tuple[float, ...] | None
    files: tuple[RemoteFile, ...] = ()
    system_dirs: tuple[str, ...] = ()
    archive: RemoteFile | None = None  # a .tar.gz that holds `files` (CIFAR); downloaded and unpacked once
    source: str = ""  # what the data is, when not the original release (results and tables carry it)


def _ensure_builtin() -> None:
    # Importing the modules runs their @register_dataset decorators.
    from dla.data import cifar, cifar_jpeg, folder, miniplaces, mnist, noise, svhn, tiny_imagenet  # noqa: F401


DATASETS: Registry[DatasetSpec] = Registry("dataset", DataError, builtin=_ensure_builtin)


def register_dataset(
    name: str,
    *,
    description: str,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    files: Sequence[RemoteFile] = (),
    system_dirs: Sequence[str] = (),
    archive: RemoteFile | None = None,
    source: str = "",
) -> Callable[[Callable[[LoadContext, bool], ImageSet]], Callable[[LoadContext, bool], ImageSet]]:
    """Enrol `load(ctx, train) -> ImageSet` under `name` (and so in `dla list` and the dataset tests)."""

    def decorate(fn: Callable[[LoadContext, bool], ImageSet]) -> Callable[[LoadContext, bool], ImageSet]:
        DATASETS.add(name, DatasetSpec(
            name=name,
            description=description,
            load=fn,
            mean=tuple(mean) if mean is not None else None,
            std=tuple(std) if std is not None else None,
            files=tuple(files),
            system_dirs=tuple(system_dirs),
            archive=archive,
            source=source,
        ))
        return fn

    return decorate


def dataset_names() -> list[str]:
    return DATASETS.names()


def get_dataset(name: str) -> DatasetSpec:
    return DATASETS.get(name)


def present(spec: DatasetSpec, root: Path) -> bool:
    """Whether every file of the dataset is already on this machine (nothing downloaded, nothing checked)."""
    return all(any(p.is_file() for p in _candidates(spec, root, rf)) for rf in spec.files)


def _candidates(spec: DatasetSpec, root: Path, rf: RemoteFile) -> list[Path]:
    """Where a file may be: the torchvision layout directly under the root, or under root/<dataset name>/ (how a
    root holding several datasets is often arranged), then system folders from dataset packages."""
    return [root / rf.path, root / spec.name / rf.path, *(Path(d) / Path(rf.path).name for d in spec.system_dirs)]


def locate(spec: DatasetSpec, root: Path, wanted: Sequence[RemoteFile] | None = None) -> dict[str, Path]:
    """Find each file under the root or a system folder; download what is missing when online.

    Offline (or when a download fails) the error lists every expected file and where it should go.
    """
    wanted = spec.files if wanted is None else wanted
    found: dict[str, Path] = {}
    missing: list[RemoteFile] = []
    for rf in wanted:
        hit = next((p for p in _candidates(spec, root, rf) if p.is_file()), None)
        if hit is None:
            missing.append(rf)
        else:
            found[rf.path] = hit
    if not missing:
        return found
    reason = "offline (DLA_OFFLINE is set)" if offline() else ""
    if not reason:
        try:
            if spec.archive is not None:
                _download_archive(spec.archive, root)
            else:
                for rf in missing:
                    _download_one(rf, root)
            for rf in missing:
                if not (root / rf.path).is_file():
                    raise DataError(f"{rf.path} is not in the downloaded archive")
                found[rf.path] = root / rf.path
            return found
        except DataError as exc:
            reason = str(exc)
        except OSError as exc:  # e.g. a read-only data root
            reason = f"cannot write under {root}: {exc.strerror}"
    where = f" or {', '.join(spec.system_dirs)}" if spec.system_dirs else ""
    names = ", ".join(rf.path for rf in missing)
    raise DataError(
        f"dataset '{spec.name}' is missing {names} under data root {root}{where} ({reason}); "
        f"put the original files there, or point --data-root / DLA_DATA at a folder that has them"
    )


def _download_one(rf: RemoteFile, root: Path) -> None:
    if not rf.urls:
        raise DataError(f"no download source is known for {rf.path}")
    last: DataError | None = None
    for url in rf.urls:
        try:
            download(url, root / rf.path, rf.checksum)
            return
        except DataError as exc:
            last = exc
    assert last is not None
    raise last


def _download_archive(archive: RemoteFile, root: Path) -> None:
    """Download a .tar.gz (verified) and unpack it under the root; members land only when all are out."""
    dest = root / archive.path
    if dest.is_file():
        read_verified(dest, archive.checksum)  # an archive left in the root is checked before it is trusted
    else:
        _download_one(archive, root)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
    try:
        with tarfile.open(dest, "r:gz") as tar:
            _safe_extract(tar, staging)
        for top in staging.iterdir():
            target = root / top.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(top, target)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot unpack {dest}: {exc}; delete it and download again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _safe_extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Unpack only plain files and folders that stay inside `dest` (Python's "data" filter, where it exists)."""
    members = tar.getmembers()
    for m in members:
        target = (dest / m.name).resolve()
        if m.name.startswith("/") or not target.is_relative_to(dest.resolve()) or not (m.isfile() or m.isdir()):
            raise tarfile.TarError(f"refused member {m.name!r}: only plain files that stay inside the root")
    if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12: belt and braces
        tar.extractall(dest, members=members, filter="data")
    else:
        tar.extractall(dest, members=members)  # members checked above


def read_verified(path: Path, checksum: Checksum | None) -> bytes:
    """Decompressed content of a dataset file, checked against its published checksum."""
    if checksum is not None and checksum.of_file:
        data = path.read_bytes()
    else:  # streamed, stopped past the expected size: a gzip bomb never fills memory
        data = read_bytes(path, limit=checksum.size if checksum is not None else None)
    verify(path, data, checksum)
    return data
