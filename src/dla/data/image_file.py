"""Opening one image file of a folder dataset, refusing what would hang or exhaust memory before decoding.

A FIFO (or a device) named `x.png` blocks `open()` forever; a small PNG whose header claims 20000 x 20000
pixels decodes into gigabytes (PIL's own guard raises `DecompressionBombError`, a traceback). Both are checked
here, on the file's type and on the size in its header, and refused as a one-line `DataError`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from dla.errors import DataError

# Pixels (width x height) an image may have: above any photo a lab trains on (a 64 MP camera: 9248 x 6936),
# below the few GB a decoded RGB image of that many pixels would take.
MAX_PIXELS = 64 * 2**20


def open_image_checked(path: Path, max_pixels: int = MAX_PIXELS) -> Any:
    """`PIL.Image.open(path)` (lazy: nothing decoded yet) for a regular file whose header size is within
    `max_pixels`; a `DataError` naming the file otherwise. Use it as a context manager, as Image.open."""
    from PIL import Image

    try:
        mode = os.stat(path).st_mode  # follows links: a link to a FIFO is a FIFO
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"image {path} is not a regular file (a FIFO, device or folder); remove it from the "
                        "dataset folder")
    try:
        img = Image.open(path)
    except Image.DecompressionBombError as exc:  # PIL's own check, at twice its MAX_IMAGE_PIXELS
        raise DataError(f"refused image {path}: {exc}") from None
    except OSError as exc:
        raise DataError(f"cannot decode image {path}: {exc}") from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise DataError(f"refused image {path}: {width} x {height} pixels is over the limit of {max_pixels:,} "
                        "(a decompression bomb, or a photo far too large to train on: resize it)")
    return img
