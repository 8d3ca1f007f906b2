"""Tiny-ImageNet-200's validation and test images (`tiny_imagenet/tiny-imagenet-200-val-test.tar.gz`), read in place.

The archive holds the release's `tiny-imagenet-200/val/images/val_K.JPEG` (K = 0..9999, labelled by
`val/val_annotations.txt`: file, wnid, box), `tiny-imagenet-200/test/images/test_K.JPEG` (K = 0..9999, no labels),
`wnids.txt` (the 200 classes) and `words.txt` (their names). The training split is not in it. So, as a dataset:

- `train=True` is the 10,000 labelled *val* images, label = the index of the image's wnid in `wnids.txt`;
- `train=False` is the 10,000 unlabelled *test* images, every label `UNLABELLED` (-1). `load_splits` refuses a
  test split with such labels, so nothing can train on this dataset and report an accuracy on its test images.

Its use is as an out-of-distribution set for 32x32 colour classifiers (ODIN's "TinyImageNet (resize)"):
`dla ood RUN --ood tiny_imagenet` scores the *test* images, and the ODIN grid tunes on the *val* images, so the
tuning never sees an OOD test image. Images are 64x64 JPEGs, 357 of the 20,000 greyscale: every image is converted
to RGB (or to grey for `data.channels=1`) and resized (bilinear) to `data.image_size` when set, e.g. the ID model's
32; 0 keeps the native 64.

The archive's sha256 is checked, the JPEGs are decoded once (a few seconds) and the arrays cached outside the
data root (`dla.data.cache`), keyed by that hash and the decode settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dla.data.files import Checksum, DataError
from dla.data.registry import ImageSet, LoadContext, RemoteFile, register_dataset
from dla.data.tar_images import decode_image, decoded_archive, tar_members

TOP = "tiny-imagenet-200"
SPLITS = ("val", "test")
SHA256 = "6931f365e4891f7e015f2beac211114ff2f3262819f0f41887021f8142a5e18b"  # MANIFEST.md section 9
SOURCE = ("Tiny-ImageNet-200, val and test splits only (no train split): train=True is the 10,000 labelled val "
          "images, train=False the 10,000 unlabelled test images")
UNLABELLED = -1  # the label of every test image: there are none, and a negative label cannot pass for a class
TEXT_FILES = ("val/val_annotations.txt", "wnids.txt", "words.txt")


def accept(name: str) -> bool:
    """Only the release's own folders, `<split>/images/<split>_K.JPEG` and the three text files."""
    parts = name.rstrip("/").split("/")
    if parts[0] != TOP:
        return False
    rest = "/".join(parts[1:])
    if rest in ("", *SPLITS, *(f"{s}/images" for s in SPLITS), *TEXT_FILES):
        return True
    return len(parts) == 4 and parts[1] in SPLITS and parts[2] == "images" and _index(parts[3], parts[1]) is not None


def _index(file: str, split: str) -> int | None:
    """'val_12.JPEG' -> 12 (for split 'val'); None for any other name."""
    stem, dot, ext = file.partition(".")
    prefix, _, k = stem.partition("_")
    ok = dot and ext == "JPEG" and prefix == split and k.isdigit() and len(k) <= 5 and k == str(int(k))
    return int(k) if ok else None


def _read_members(path: Path, size: int, mode: str) -> tuple[dict[str, dict[int, np.ndarray]], dict[str, str]]:
    """({split: {K: (H, W, C) uint8}}, {text file: content}), every member checked by `tar_images`."""
    images: dict[str, dict[int, np.ndarray]] = {s: {} for s in SPLITS}
    texts: dict[str, str] = {}
    # words.txt (all of ImageNet's 82k synsets) is 2.6 MB; a 64x64 JPEG a few kB; the archive unpacks to 42 MB.
    for name, data in tar_members(path, accept, max_member=4 << 20, max_total=256 << 20):
        rest = name.split("/", 1)[1]
        if rest in TEXT_FILES:
            try:
                texts[rest] = data.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path} member {name!r} is not UTF-8 text; delete the archive and get the "
                                "original") from None
            continue
        split, _, file = rest.split("/")
        images[split][_index(file, split)] = decode_image(data, name, path, mode=mode, shape=(64, 64), size=size)
    return images, texts


def _stack(found: dict[int, np.ndarray], split: str, path: Path) -> np.ndarray:
    """{K: (H, W, C)} -> (N, C, H, W), row K = image K; K must run 0..N-1."""
    if not found:
        raise DataError(f"{path} has no {TOP}/{split}/images/{split}_K.JPEG images; it is not the Tiny-ImageNet "
                        "val/test archive")
    missing = sorted(set(range(len(found))) - set(found))
    if missing:
        raise DataError(f"{path} is incomplete: {split}_{missing[0]}.JPEG is missing (the {split} images must be "
                        f"{split}_0 .. {split}_{len(found) - 1}); delete it and get the original")
    return np.stack([found[k] for k in range(len(found))]).transpose(0, 3, 1, 2).copy()


def _classes(texts: dict[str, str], path: Path) -> tuple[list[str], list[str]]:
    """(wnids in wnids.txt's order, a unique display name for each: words.txt's first synonym)."""
    for f in ("wnids.txt", "words.txt", "val/val_annotations.txt"):
        if f not in texts:
            raise DataError(f"{path} has no {TOP}/{f}; it is not the Tiny-ImageNet val/test archive")
    wnids = [w.strip() for w in texts["wnids.txt"].splitlines() if w.strip()]
    if not wnids or len(set(wnids)) != len(wnids):
        raise DataError(f"{path}: wnids.txt is empty or lists a class twice; delete the archive and get the original")
    words = dict(line.split("\t", 1) for line in texts["words.txt"].splitlines() if "\t" in line)
    names = [words.get(w, w).split(",")[0].strip() or w for w in wnids]
    # ImageNet reuses names ("crane" the bird and the machine): such names get their wnid, so each is one class.
    return wnids, [n if names.count(n) == 1 else f"{n} ({w})" for n, w in zip(names, wnids, strict=True)]


def _val_labels(annotations: str, wnids: list[str], n: int, path: Path) -> np.ndarray:
    """(n,) int64: the wnid index of val_K for every K, from val_annotations.txt's `file<TAB>wnid<TAB>box` lines."""
    index = {w: i for i, w in enumerate(wnids)}
    labels = np.full(n, UNLABELLED, dtype=np.int64)
    for line in annotations.splitlines():
        fields = line.split("\t")
        k = _index(fields[0], "val") if len(fields) >= 2 else None
        if k is None or fields[1] not in index or k >= n:
            raise DataError(f"{path}: val_annotations.txt line {line[:60]!r} does not name one of the val images "
                            "and one of the wnids; delete the archive and get the original")
        labels[k] = index[fields[1]]
    if (labels < 0).any():
        k = int(np.flatnonzero(labels < 0)[0])
        raise DataError(f"{path}: val_{k}.JPEG has no line in val_annotations.txt; delete the archive and get the "
                        "original")
    return labels


def decode_archive(path: Path, size: int = 0, channels: int = 3) -> dict[str, np.ndarray]:
    """{val_x, val_y, test_x, wnids, names}: images (N, C, H, W) uint8, val labels (N,) int64, class ids and names."""
    images, texts = _read_members(path, size, "L" if channels == 1 else "RGB")
    wnids, names = _classes(texts, path)
    val_x = _stack(images["val"], "val", path)
    return {"val_x": val_x, "val_y": _val_labels(texts["val/val_annotations.txt"], wnids, len(val_x), path),
            "test_x": _stack(images["test"], "test", path), "wnids": np.array(wnids), "names": np.array(names)}


@register_dataset(
    "tiny_imagenet",
    description="Tiny-ImageNet-200 val (10k, labelled) and test (10k, unlabelled) only, 64x64 colour, 200 classes; "
                "an OOD set (train=True: val, train=False: test)",
    files=(RemoteFile(f"tiny_imagenet/{TOP}-val-test.tar.gz", Checksum("sha256", SHA256, of_file=True)),),
    source=SOURCE,
)
def load_tiny_imagenet(ctx: LoadContext, train: bool) -> ImageSet:
    arrays = decoded_archive(ctx, "the Tiny-ImageNet val/test archive", decode_archive)
    names = [str(n) for n in arrays["names"]]
    if train:
        return ImageSet(torch.from_numpy(arrays["val_x"]), torch.from_numpy(arrays["val_y"]), names)
    x = torch.from_numpy(arrays["test_x"])
    return ImageSet(x, torch.full((len(x),), UNLABELLED, dtype=torch.int64), names)
