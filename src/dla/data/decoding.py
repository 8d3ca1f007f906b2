"""Many image files decoded into one (N, C, H, W) uint8 tensor by DataLoader workers, at any size.

Each worker decodes a chunk of consecutive files into one (B, C, H, W) uint8 array and sends it back as
plain bytes through the DataLoader's pipe, to be copied into the preallocated result. Tensors would travel
as shared memory with one file descriptor each, held open until the receiver drops them: returning every
image as its own tensor ran out of descriptors ("received 0 items of ancdata", or a hang) at tens of
thousands of images, and a tensor still on its way from a worker that died cannot be fetched at all. Bytes
need no descriptor, no /dev/shm, and cost one copy (a few ms per chunk, against tens of ms to decode it).
Anything that goes wrong is one line naming the file: an image that does not decode, images of differing
size, and a worker that dies (a crashing decoder, the out-of-memory killer), found through the index each
worker posts in shared memory before it opens a file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from dla.data.image_file import open_image_checked
from dla.errors import DataError

MAX_CHUNK = 256  # images per worker batch: 256 CIFAR images are 0.8 MB, 256 MiniPlaces ones 12.6 MB
_IDLE = -1


def decode_file(path: Path, size: int, mode: str) -> np.ndarray:
    """(H, W, C) uint8 pixels of one image file, converted to `mode` ("L" or "RGB") and resized to size x size
    (bilinear) when `size`; a file that cannot be read or decoded raises DataError naming it."""
    from PIL import Image

    try:
        with open_image_checked(path) as img:  # a FIFO or a pixel bomb is refused before decoding
            img = img.convert(mode)
            if size and img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def size_error(where: Path, a: Path, shape_a: tuple[int, ...], b: Path, shape_b: tuple[int, ...]) -> str:
    return (f"images under {where} differ in size (C, H, W = {tuple(shape_a)} for {a}, {tuple(shape_b)} for {b}); "
            "set data.image_size to resize them")


def _as_is(batch: np.ndarray | str) -> np.ndarray | str:
    return batch  # not default_convert: an array made into a tensor would travel as shared memory


class _Chunks(Dataset):
    """Item k: files[k * chunk : (k + 1) * chunk] decoded into one (B, C, H, W) uint8 array, or the one-line
    message (a str) of what went wrong; a message travels back as a value, without a worker's traceback."""

    def __init__(self, files: list[Path], size: int, channels: int, chunk: int, where: Path,
                 posts: torch.Tensor) -> None:
        self.files, self.size, self.chunk, self.where = files, size, chunk, where
        self.mode = "L" if channels == 1 else "RGB"
        self.posts = posts  # (slots, 2) int64 in shared memory: each worker's pid and the file it is decoding

    def __len__(self) -> int:
        return -(-len(self.files) // self.chunk)

    def __getitem__(self, k: int) -> np.ndarray | str:
        info = get_worker_info()
        post = self.posts[info.id if info is not None else 0].numpy()  # numpy: a store costs 0.1 us, not 10 us
        post[0] = os.getpid()
        first = k * self.chunk
        out: np.ndarray | None = None
        for j, f in enumerate(self.files[first:first + self.chunk]):
            post[1] = first + j  # before opening: if the decoder takes the process down, this names the file
            try:
                pixels = decode_file(f, self.size, self.mode).transpose(2, 0, 1)  # (C, H, W)
            except DataError as exc:
                return str(exc)
            if out is None:
                out = np.empty((min(self.chunk, len(self.files) - first), *pixels.shape), dtype=np.uint8)
            elif pixels.shape != out.shape[1:]:
                return size_error(self.where, self.files[first], out.shape[1:], f, pixels.shape)
            out[j] = pixels
        post[1] = _IDLE
        assert out is not None  # every chunk holds at least one file
        return out


def decode_files(files: list[Path], size: int, channels: int, workers: int, where: Path) -> torch.Tensor:
    """(N, C, H, W) uint8 images of `files`, in order, decoded by `workers` DataLoader workers (0: here)."""
    if not files:
        raise DataError(f"no images to decode under {where}")
    # Several chunks per worker even for a small folder, so every worker has work; at most MAX_CHUNK images.
    # No more workers than CPUs this process may run on (taskset, a container's cpuset): more only contend, and
    # torch warns on stderr, which the one-line error contract forbids.
    workers = min(workers, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    chunk = max(1, min(MAX_CHUNK, -(-len(files) // (4 * max(workers, 1)))))
    workers = min(workers, -(-len(files) // chunk))
    posts = torch.full((max(workers, 1), 2), _IDLE, dtype=torch.int64).share_memory_()
    data = _Chunks(files, size, channels, chunk, where, posts)
    # Its own generator: a DataLoader draws its workers' seed from torch's global one otherwise, and a run that
    # decodes would then train from other initial weights than a run that reads the cache.
    loader = DataLoader(data, batch_size=None, num_workers=workers, collate_fn=_as_is,
                        generator=torch.Generator().manual_seed(0))
    out: np.ndarray | None = None
    try:
        for k, batch in enumerate(loader):
            if isinstance(batch, str):
                raise DataError(batch)
            if out is None:
                out = np.empty((len(files), *batch.shape[1:]), dtype=np.uint8)
            elif batch.shape[1:] != out.shape[1:]:
                raise DataError(size_error(where, files[0], out.shape[1:], files[k * chunk], batch.shape[1:]))
            out[k * chunk:k * chunk + len(batch)] = batch
    except RuntimeError as exc:  # a dead worker; anything else is a bug and keeps its traceback
        if _DEATH.search(str(exc)) is None:
            raise
        raise DataError(worker_death(str(exc), posts, files, where)) from None
    assert out is not None
    return torch.from_numpy(out)


_DEATH = re.compile(r"DataLoader worker \(pids?(?:\(s\))? ([\d, ]+)\) (is killed by signal: [^.]*|exited "
                    r"unexpectedly(?: with exit code -?\d+)?)")


def worker_death(message: str, posts: torch.Tensor, files: list[Path], where: Path) -> str:
    """One line for a worker that died: which process, how, and the file it had open (from `posts`)."""
    m = _DEATH.search(message)
    assert m is not None
    pids = {int(p) for p in m.group(1).replace(" ", "").split(",") if p}
    open_files = [files[int(i)] for pid, i in posts.tolist() if pid in pids and i != _IDLE]
    at = f"while decoding {open_files[0]}" if open_files else f"while decoding the images under {where}"
    return (f"an image-decoding worker (pid {', '.join(map(str, sorted(pids)))}) {m.group(2)} {at}; "
            "a damaged file can crash the decoder (check or remove it), or memory ran out (fewer data.workers, "
            "a smaller data.image_size); data.workers=0 decodes in this process")
