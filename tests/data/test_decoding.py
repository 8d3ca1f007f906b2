"""Decoding image folders in DataLoader workers: any number of images, one line for every failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dla.data import decoding
from dla.data.decoding import decode_files
from dla.data.files import DataError
from dla.data.registry import LoadContext, get_dataset

from ..conftest import REPO, one_line_error


def make_tree(root: Path, n: int, size: tuple[int, int] = (8, 6), classes: int = 3) -> list[Path]:
    """root/train/c<k>/<i>.png with random pixels; the files in the order ImageFolder scans them."""
    rng = np.random.default_rng(n)
    for i in range(n):
        path = root / "train" / f"c{i % classes}" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return sorted((root / "train").rglob("*.png"))


def reference(files: list[Path], mode: str = "RGB") -> torch.Tensor:
    """(N, C, H, W) uint8 as PIL decodes each file in a plain loop."""
    out = []
    for f in files:
        with Image.open(f) as img:
            arr = np.asarray(img.convert(mode))
        out.append(arr[:, :, None] if arr.ndim == 2 else arr)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


def load(root: Path, workers: int, **kw: int) -> torch.Tensor:
    ctx = LoadContext(root=root.parent, name="imagefolder", path=root.name, workers=workers, **kw)
    return get_dataset("imagefolder").load(ctx, True).x


def test_workers_decode_in_order_like_a_plain_loop(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "ds", 37)
    want = reference(files)
    for workers in (0, 1, 2):
        got = decode_files(files, 0, 3, workers, tmp_path)
        assert got.dtype == torch.uint8 and got.shape == (37, 3, 6, 8)
        assert torch.equal(got, want), workers
    grey = decode_files(files, 0, 1, 2, tmp_path)
    assert torch.equal(grey, reference(files, "L"))
    small = decode_files(files, 4, 3, 2, tmp_path)
    assert small.shape == (37, 3, 4, 4)


FD_LIMIT = 64  # open files the child may hold: the folder has more than 4 times as many images


def test_more_images_than_file_descriptors_with_two_workers(tmp_path: Path) -> None:
    # One tensor per image through the workers needed one file descriptor per image in flight: with a low
    # limit that crashed ("received 0 items of ancdata", "Too many open files") or hung.
    files = make_tree(tmp_path / "ds", 5 * FD_LIMIT)
    out = tmp_path / "x.npy"
    child = textwrap.dedent(f"""
        import resource, sys
        from pathlib import Path
        import numpy as np
        from dla.data.registry import LoadContext, get_dataset
        resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        ctx = LoadContext(root=Path({str(tmp_path)!r}), name="imagefolder", path="ds", workers=2)
        np.save({str(out)!r}, get_dataset("imagefolder").load(ctx, True).x.numpy())
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "DLA_CACHE": "off"}
    proc = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True,
                          timeout=300)  # 3 s alone; minutes on a loaded 2-core machine
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert torch.equal(torch.from_numpy(np.load(out)), reference(files))


def test_a_killed_worker_is_one_line_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = make_tree(tmp_path / "ds", 40)
    victim = files[29]
    real = decoding.decode_file

    def crash_on_victim(path: Path, size: int, mode: str) -> np.ndarray:
        if path == victim:  # as a decoder that segfaults, or the out-of-memory killer, would
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, size, mode)

    monkeypatch.setattr(decoding, "decode_file", crash_on_victim)  # the forked workers inherit it
    with pytest.raises(DataError) as exc:
        load(tmp_path / "ds", workers=2)
    line = str(exc.value)
    assert "\n" not in line and f"while decoding {victim};" in line and "worker (pid " in line, line
    assert "data.workers=0" in line


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_files_are_one_line_naming_the_file(tmp_path: Path, workers: int) -> None:
    files = make_tree(tmp_path / "ds", 20)
    files[13].unlink()
    files[13].mkdir()  # a folder where an image should be: it is listed but cannot be read
    with pytest.raises(DataError, match=r"cannot decode image|is not a regular file") as exc:
        load(tmp_path / "ds", workers)
    assert str(files[13]) in str(exc.value) and "\n" not in str(exc.value)
    files[13].rmdir()
    files[13].symlink_to(tmp_path / "gone.png")  # a dangling link
    with pytest.raises(DataError, match=r"cannot (read|decode) image") as exc:
        load(tmp_path / "ds", workers)
    assert str(files[13]) in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("odd", [1, 30])  # in the first chunk (seen in a worker), in a later one (seen here)
def test_differing_sizes_are_one_line_naming_two_files(tmp_path: Path, odd: int) -> None:
    files = make_tree(tmp_path / "ds", 40)
    Image.new("RGB", (9, 6)).save(files[odd])
    with pytest.raises(DataError, match=r"differ in size.*data\.image_size") as exc:
        load(tmp_path / "ds", workers=2)
    line = str(exc.value)
    assert "\n" not in line and str(files[odd]) in line and "(3, 6, 8)" in line and "(3, 6, 9)" in line, line
    assert load(tmp_path / "ds", workers=2, image_size=5).shape == (40, 3, 5, 5)


def test_the_cli_reports_a_bad_image_on_one_line_with_workers(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    files = make_tree(tmp_path / "ds", 12)
    files[5].write_bytes(b"not a png")
    one_line_error(capsys, ["run", "cnn_fmnist", "data.name=imagefolder", f"data.path={tmp_path / 'ds'}",
                            "data.channels=3", "data.workers=2", "data.val_size=2", "tracking.progress=off",
                            "--out", str(tmp_path / "runs")], "cannot decode image", str(files[5]))


@pytest.mark.parametrize("workers", [0, 2])
def test_decoding_leaves_the_global_random_state_alone(tmp_path: Path, workers: int) -> None:
    # Otherwise a run that decodes and a run that reads the cache would start from different weights.
    files = make_tree(tmp_path / "ds", 10)
    torch.manual_seed(0)
    decode_files(files, 0, 3, workers, tmp_path)
    after = torch.rand(4)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(4))
