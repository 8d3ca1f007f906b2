"""A small Tiny-ImageNet val/test archive with the release's layout, for the loader and `dla ood` tests."""

from __future__ import annotations

import dataclasses
import io
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dla.data import get_dataset
from dla.data.files import Checksum, file_digest

TOP = "tiny-imagenet-200"
ARCHIVE = "tiny_imagenet/tiny-imagenet-200-val-test.tar.gz"
WNIDS = ["n01443537", "n01629819", "n03444034", "n02123394"]
WORDS = {"n01443537": "goldfish, Carassius auratus", "n01629819": "European fire salamander",
         "n03444034": "crane", "n02123394": "crane", "n09999999": "not a class here"}  # two classes named "crane"
N_VAL, N_TEST = 8, 6
GREY_VAL, GREY_TEST = {2, 5}, {1}  # stored as "L" JPEGs, as 357 of the release's images are


def _jpeg(seed: int, grey: bool) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (64, 64) if grey else (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "L" if grey else "RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def val_labels() -> list[int]:
    return [(3 * k + 1) % len(WNIDS) for k in range(N_VAL)]


def members() -> list[tuple[str, bytes | None]]:
    """The release's layout and archive order (val images, annotations, test images, wnids, words); None = folder."""
    out: list[tuple[str, bytes | None]] = [(f"{TOP}/val", None), (f"{TOP}/val/images", None)]
    out += [(f"{TOP}/val/images/val_{k}.JPEG", _jpeg(k, k in GREY_VAL)) for k in sorted(range(N_VAL), key=str)]
    ann = "".join(f"val_{k}.JPEG\t{WNIDS[c]}\t0\t1\t60\t62\n" for k, c in enumerate(val_labels()))
    out += [(f"{TOP}/val/val_annotations.txt", ann.encode()), (f"{TOP}/test", None), (f"{TOP}/test/images", None)]
    out += [(f"{TOP}/test/images/test_{k}.JPEG", _jpeg(100 + k, k in GREY_TEST)) for k in range(N_TEST)]
    out += [(f"{TOP}/wnids.txt", "".join(w + "\n" for w in WNIDS).encode()),
            (f"{TOP}/words.txt", "".join(f"{w}\t{n}\n" for w, n in WORDS.items()).encode())]
    return out


def write_archive(root: Path, items: Iterable[tuple[str, bytes | None]],
                  extra: Callable[[tarfile.TarFile], None] | None = None) -> Path:
    path = root / ARCHIVE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in items:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        if extra is not None:
            extra(tar)
    return path


def pin_archive(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Make the registry's pinned sha256 that of `path` (undone after the test)."""
    spec = get_dataset("tiny_imagenet")
    (rf,) = spec.files
    monkeypatch.setattr(spec, "files", (dataclasses.replace(
        rf, checksum=Checksum("sha256", file_digest(path, "sha256"), of_file=True)),))
