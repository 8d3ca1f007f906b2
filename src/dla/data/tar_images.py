"""Images read straight out of a .tar.gz, in place: nothing is extracted, and a hostile archive is one line.

The archive is streamed once (gzip, then tar) through a reader that counts every decompressed byte, so a
compression bomb or a huge GNU long-name / pax header stops at `max_total` bytes instead of filling memory.
Each member must be a plain file or folder whose name `accept` admits (and that stays inside the archive);
links, devices, oversized members and images that do not decode are refused, naming the member.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from dla.data.cache import cached_arrays
from dla.data.files import DataError, file_digest
from dla.data.registry import LoadContext, get_dataset, locate


class _CappedReader:
    """A read-only stream over `inner` that raises once more than `cap` bytes have been read in all."""

    def __init__(self, inner: gzip.GzipFile, cap: int, where: Path) -> None:
        self.inner, self.cap, self.where, self.total = inner, cap, where, 0

    def read(self, n: int = -1) -> bytes:
        room = self.cap - self.total
        if n is None or n < 0 or n > room + 1:
            n = room + 1  # never ask the decompressor for more than the cap allows
        data = self.inner.read(n)
        self.total += len(data)
        if self.total > self.cap:
            raise DataError(f"{self.where} unpacks to more than {self.cap >> 20} MiB; it is not the expected "
                            "archive (a compression bomb?); delete it and get the original")
        return data


def _check_member(m: tarfile.TarInfo, accept: Callable[[str], bool], max_member: int, where: Path) -> None:
    name = PurePosixPath(m.name)
    if name.is_absolute() or ".." in name.parts or not m.name or not accept(m.name):
        raise DataError(f"{where} has an unexpected member {m.name!r}; refusing the archive (only the "
                        "dataset's own image folders are allowed); delete it and get the original")
    if not (m.isfile() or m.isdir()):
        raise DataError(f"{where} member {m.name!r} is a link or special file, not a plain file; refusing the "
                        "archive; delete it and get the original")
    if m.isfile() and m.size > max_member:
        raise DataError(f"{where} member {m.name!r} is {m.size:,} bytes, more than the {max_member:,} an image "
                        "of this dataset can be; refusing the archive; delete it and get the original")


def tar_members(path: Path, accept: Callable[[str], bool], *, max_member: int = 1 << 20,
                max_total: int = 1 << 30) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every plain file in the archive, in archive order, after the checks above."""
    try:
        with gzip.open(path, "rb") as gz:
            stream = _CappedReader(gz, max_total, path)
            with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
                for m in tar:
                    _check_member(m, accept, max_member, path)
                    if m.isfile():
                        f = tar.extractfile(m)
                        assert f is not None  # a plain file always has data
                        yield m.name, f.read()
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path} is truncated or corrupt (cannot unpack it: {exc or type(exc).__name__}); "
                        "delete it and get the original") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


def decode_image(data: bytes, name: str, where: Path, *, mode: str = "RGB",
                 shape: tuple[int, int] | None = None, size: int = 0) -> np.ndarray:
    """(H, W, C) uint8 pixels of one image file's bytes; `shape` (H, W) is required when given (checked on the
    header, before any pixel is decoded), `size` resizes to size x size (bilinear)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            if shape is not None and (img.height, img.width) != shape:
                raise DataError(f"{where} member {name!r} is {img.width}x{img.height} pixels, not the "
                                f"{shape[1]}x{shape[0]} of this dataset; delete the archive and get the original")
            img = img.convert(mode)
            if size and img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except DataError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{where} member {name!r} is not a decodable image ({exc}); delete the archive and get "
                        "the original") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def decoded_archive(ctx: LoadContext, what: str,
                    decode: Callable[[Path, int, int], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays `decode(path, size, channels)` makes of the dataset's one archive, from the decoded-image cache
    when it holds them: the archive is found under the data root and its sha256 checked (streamed) first; `what`
    names it in the error ("the CIFAR-10 JPEG archive")."""
    spec = get_dataset(ctx.name)
    (archive,) = spec.files
    assert archive.checksum is not None
    path = locate(spec, ctx.root)[archive.path]
    got = file_digest(path, "sha256")
    if got != archive.checksum.hexdigest:
        raise DataError(f"{path} failed its sha256 check ({got[:12]}..., expected {archive.checksum.hexdigest[:12]}"
                        f"...): it is not {what}, or it is damaged; get the original again")
    channels = ctx.channels or 3
    parts = {"dataset": ctx.name, "sha256": got, "size": ctx.image_size, "channels": channels}
    return cached_arrays(ctx.name, parts, lambda: decode(path, ctx.image_size, channels))

