"""Checksums over decompressed content, atomic writes and resumable downloads.

Checksums are taken over the *decompressed* bytes, so a re-compressed copy of the same data (Debian's
Fashion-MNIST package rewrites the gzip headers) still verifies. Downloads go to `<name>.part`, resume with
an HTTP Range request, are verified, and only then renamed into place: no half-downloaded file is ever
left under a name a loader would read.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from dla.errors import DataError
from dla.io import atomic_write as atomic_write  # re-exported: the loaders' callers import it from here
from dla.io import fsync_dir

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Checksum:
    """`algo` over the decompressed content of a file (gzip is undone first)."""

    algo: str  # "sha256" or "md5" (the published CIFAR/SVHN values are MD5)
    hexdigest: str
    of_file: bool = False  # True: over the file's bytes as stored (a published .tar.gz MD5), not gunzipped
    size: int | None = None  # bytes of the decompressed content, where known: a longer stream is refused early


# Without a known size, what a gzipped dataset file may decompress to: far above any dataset here, far below
# the 1000:1 a gzip bomb reaches (a few MB on disk expanding to every byte of memory).
MAX_DECOMPRESSED = 2 << 30


def read_bytes(path: Path, gz: bool | None = None, limit: int | None = None) -> bytes:
    """The file's content, gunzipped when it ends in .gz (or when `gz` says so). The decompression is streamed
    and stops as soon as it passes `limit` bytes (default MAX_DECOMPRESSED): a gzip bomb in place of a dataset
    file is refused after reading little more than the real file's size, not after filling memory."""
    limit = MAX_DECOMPRESSED if limit is None else limit
    try:
        if path.suffix == ".gz" if gz is None else gz:
            return _gunzip(path, limit)
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        # EOFError: cut short; BadGzipFile: bad header or CRC; zlib.error: a damaged deflate stream.
        raise DataError(f"{path} is truncated or corrupt (cannot decompress it: {exc}); "
                        "delete it and download again") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}; delete it and download again") from None


def _gunzip(path: Path, limit: int) -> bytes:
    out = bytearray()
    with gzip.open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            out += chunk
            if len(out) > limit:
                raise DataError(f"{path} decompresses to more than the {limit:,} bytes it should hold (a damaged "
                                "file or a gzip bomb); delete it and download again")
    return bytes(out)


def digest(data: bytes, algo: str) -> str:
    return hashlib.new(algo, data).hexdigest()


def verify(path: Path, data: bytes, checksum: Checksum | None) -> None:
    if checksum is None:
        return
    got = digest(data, checksum.algo)
    if got != checksum.hexdigest:
        raise DataError(
            f"{path} failed its {checksum.algo} check (decompressed content {got[:12]}..., expected "
            f"{checksum.hexdigest[:12]}...): the file is corrupt or truncated; delete it and download again"
        )


def file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, checksum: Checksum | None = None, timeout: float = 30.0) -> None:
    """Fetch `url` to `dest` via `dest.part`, resuming a partial download, verifying before the rename.

    Nothing is created on disk until the server has answered, so an offline attempt leaves no trace.
    """
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "dla"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if not (have and exc.code == 416):
                raise
            exc.close()
            response = None  # 416: the .part already holds every byte (stopped before the rename); verify it
        if response is not None:
            with response:
                # A server that ignores Range answers 200 with the whole file: start over.
                append = have > 0 and response.status == 206
                length = response.headers.get("Content-Length", "")
                expected = int(length) if length.isdigit() else None
                got = 0
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(part, "ab" if append else "wb") as f:
                    while chunk := response.read(_CHUNK):
                        f.write(chunk)
                        got += len(chunk)
            # http.client's read(n) returns b"" when the peer hangs up early instead of raising.
            if expected is not None and got < expected:
                raise ConnectionError(f"connection closed after {got} of {expected} bytes")
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as exc:
        kept = f"; the partial file {part} is kept and the next attempt resumes it" if part.exists() else ""
        reason = getattr(exc, "reason", None) or exc
        raise DataError(f"download of {url} failed ({reason}){kept}") from None
    try:
        if checksum is not None:
            data = part.read_bytes() if checksum.of_file else read_bytes(part, gz=dest.suffix == ".gz",
                                                                           limit=checksum.size)
            verify(dest, data, checksum)
    except DataError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    fsync_dir(dest.parent)
