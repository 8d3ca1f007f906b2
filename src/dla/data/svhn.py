"""SVHN (cropped digits) from the original MATLAB files `SVHN/{train,test}_32x32.mat`."""

from __future__ import annotations

import io

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

_URL = "http://ufldl.stanford.edu/housenumbers/"


@register_dataset(
    "svhn",
    description="SVHN cropped digits, 73k train / 26k test, 32x32 colour",
    mean=(0.4377, 0.4438, 0.4728),
    std=(0.1980, 0.2010, 0.1970),
    files=[
        RemoteFile("SVHN/train_32x32.mat", Checksum("md5", "e26dedcc434d2e4c54c9b2d4a06d8373"),
                   (_URL + "train_32x32.mat",)),
        RemoteFile("SVHN/test_32x32.mat", Checksum("md5", "eb5a983be6a315427106f1b164d9cef3"),
                   (_URL + "test_32x32.mat",)),
    ],
)
def load_svhn(ctx: LoadContext, train: bool) -> ImageSet:
    import scipy.io  # only SVHN needs it

    spec = get_dataset(ctx.name)
    (rf,) = [rf for rf in spec.files if ("train" if train else "test") in rf.path]
    path = locate(spec, ctx.root, [rf])[rf.path]
    try:
        mat = scipy.io.loadmat(io.BytesIO(read_verified(path, rf.checksum)))
        x = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)), dtype=np.uint8)  # (H, W, C, N) -> (N, C, H, W)
        y = mat["y"].astype(np.int64).reshape(-1)
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{path} is not an SVHN .mat file ({exc})") from None
    y[y == 10] = 0  # SVHN stores the digit 0 as label 10
    return ImageSet(torch.from_numpy(x), torch.from_numpy(y), [str(i) for i in range(10)])
