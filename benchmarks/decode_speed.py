"""Benchmark: decoding an ImageFolder tree, dla's decoder and cache against PIL in a plain loop, in images/s.

The tree is built in a temporary folder under /tmp from the CIFAR-10 JPEG archive
(`<data root>/cifar10_jpeg/cifar10-jpeg.tar.gz`, read in place, never unpacked into the data root): the
first `--images` training images, the same number of each class, as `train/<class>/NNNN.jpg` (32x32 JPEG).
Each repeat times, interleaved so that load from elsewhere slows every side alike:

- PIL: a plain loop, `Image.open(f).convert("RGB")`, `np.asarray`, then `np.stack` and a transpose to
  (N, C, H, W): what a hand-written loader does;
- dla's decoder (`dla.data.decoding.decode_files`) with each of `--workers` DataLoader workers, cache off;
- the ImageFolder loader's first run on the tree (decode with 2 workers + write the cache entry) and its
  second run (scan the tree, stat every file for the key, read and verify the cached arrays): what
  `dla run` pays before training, the first time and every time after.

Files are read from the page cache in every case (the first, untimed pass warms it). We report the median of
`--repeats` and the ratio to PIL (> 1: faster than PIL). The tree and its cache are deleted at the end.

    python benchmarks/decode_speed.py                          # writes benchmarks/results_decode_speed.json
    python benchmarks/decode_speed.py --images 50000 --repeats 1 --out /tmp/decode50k.json  # the whole train split
    python benchmarks/decode_speed.py --quick --out /tmp/ds.json   # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
from PIL import Image

from dla.data import cifar_jpeg
from dla.data.decoding import decode_files
from dla.data.registry import LoadContext, get_dataset
from dla.data.root import resolve_data_root
from dla.data.tar_images import tar_members

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, save_result

DEFAULT_OUT = Path(__file__).resolve().parent / "results_decode_speed.json"
ARCHIVE = "cifar10_jpeg/cifar10-jpeg.tar.gz"


def build_tree(archive: Path, images: int, into: Path) -> list[Path]:
    """The first images/10 training JPEGs of each class, written as into/train/<class>/NNNN.jpg (bytes as is,
    names checked by the CIFAR-10 JPEG loader's own rules)."""
    per_class = -(-images // len(cifar_jpeg.CLASSES))
    for name, data in tar_members(archive, cifar_jpeg.accept, max_member=64 << 10, max_total=512 << 20):
        split, cls, file = name.split("/")
        if split == "train" and int(file.split(".")[0]) < per_class:
            path = into / "train" / cls / file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    files = sorted((into / "train").rglob("*.jpg"))
    if len(files) < images:
        sys.exit(f"{archive} gave only {len(files)} training images, fewer than --images {images}")
    return files


def pil_loop(files: list[Path]) -> np.ndarray:
    out = []
    for f in files:
        with Image.open(f) as img:
            out.append(np.asarray(img.convert("RGB")))
    return np.stack(out).transpose(0, 3, 1, 2).copy()  # (N, C, H, W)


def sides(tree: Path, files: list[Path], workers: list[int], cache: Path) -> dict[str, Callable[[], np.ndarray]]:
    """name -> a function that produces the (N, C, H, W) uint8 images of `files` once."""
    def load() -> np.ndarray:
        ctx = LoadContext(root=tree.parent, name="imagefolder", path=tree.name, workers=2)
        return get_dataset("imagefolder").load(ctx, True).x.numpy()

    def first_run() -> np.ndarray:
        shutil.rmtree(cache, ignore_errors=True)  # a miss every time
        return load()

    def off(fn: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            os.environ["DLA_CACHE"] = "off"
            try:
                return fn()
            finally:
                os.environ["DLA_CACHE"] = str(cache)
        return run

    out: dict[str, Callable[[], np.ndarray]] = {"PIL plain loop": lambda: pil_loop(files)}
    for w in workers:
        out[f"dla decoder, {w} workers"] = off(lambda w=w: decode_files(files, 0, 3, w, tree).numpy())
    out["dla ImageFolder, first run (decode + write cache)"] = first_run
    out["dla ImageFolder, later runs (cached)"] = load
    return out


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the DataLoader workers, joined when done)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def time_sides(fns: dict[str, Callable[[], np.ndarray]], repeats: int) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds per call of each side, the order rotated every repeat; every side must give PIL's
    pixels. CPU seconds do not grow when other jobs share the cores; wall seconds do."""
    names = list(fns)
    want = fns[names[0]]()  # also warms the page cache
    times: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in names}
    for i in range(repeats):
        for name in names[i % len(names):] + names[:i % len(names)]:
            c0, t0 = cpu_seconds(), time.perf_counter()
            got = fns[name]()
            times[name]["wall"].append(time.perf_counter() - t0)
            times[name]["cpu"].append(cpu_seconds() - c0)
            if not np.array_equal(got, want):
                sys.exit(f"{name}: pixels differ from PIL's")
    return times


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| decoder | images/s (median) | seconds | vs PIL | images per CPU-second | CPU vs PIL |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['side']} | {r['images_per_s']:,.0f} | {r['median_s']:.2f} | {r['vs_pil']:.2f}x | "
                     f"{r['images_per_cpu_s']:,.0f} | {r['cpu_vs_pil']:.2f}x |")
    return "\n".join(lines)


def summarise(times: dict[str, dict[str, list[float]]], images: int) -> list[dict[str, Any]]:
    med = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
    pil = med["PIL plain loop"]
    return [{"side": name, "median_s": m["wall"], "images_per_s": images / m["wall"], "vs_pil": pil["wall"] / m["wall"],
             "median_cpu_s": m["cpu"], "images_per_cpu_s": images / m["cpu"], "cpu_vs_pil": pil["cpu"] / m["cpu"],
             "times_s": times[name]["wall"], "cpu_s": times[name]["cpu"]} for name, m in med.items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--quick", action="store_true", help="1,000 images, 1 repeat")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    if args.quick:
        args.images, args.repeats = 1000, 1
    if args.images <= 0 or args.images % 10 or args.images > 50000:
        p.error("--images must be a multiple of 10 (the same number of each class), at most 50,000")
    archive = resolve_data_root(args.data_root) / ARCHIVE
    workers = [int(w) for w in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="dla-decode-bench-", dir="/tmp"))
    try:
        t0 = time.perf_counter()
        files = build_tree(archive, args.images, tmp / "tree")
        print(f"{len(files):,} images written to {tmp / 'tree'} in {time.perf_counter() - t0:.1f} s", flush=True)
        os.environ["DLA_CACHE"] = str(tmp / "cache")
        times = time_sides(sides(tmp / "tree", files, workers, tmp / "cache"), args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = summarise(times, len(files))
    machine = machine_info(torch.get_num_threads(), torch.device("cpu"), pillow=PIL.__version__)
    machine["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]  # other jobs on the machine
    result = {"machine": machine,
              "settings": {"images": len(files), "workers": workers, "repeats": args.repeats,
                           "image": "CIFAR-10 JPEG, 32x32 RGB"},
              "rows": rows}
    save_result(args.out, result, markdown(rows))


if __name__ == "__main__":
    main()
