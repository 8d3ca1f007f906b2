"""Benchmark: the cifar10_fast recipe's data path against the textbook loop, time-to-82% and images/s.

Both sides train the same model (the `cifar10_fast` experiment's fastnet, whitened from the same 5,000
training images), with the same optimizer, schedule, label smoothing, bf16 autocast and channels_last, on the
same 45,000 / 10,000 train / test images of the CIFAR-10 JPEG copy (decoded once, outside the timing). Only the
data path differs:

- ours: dla's `TensorLoader` (the uint8 dataset as one tensor, a seeded permutation sliced into batches) and
  `augment` (batched flip and padded random crop, tensor code);
- textbook: a per-image `Dataset` that turns each stored image into a PIL image, pads and crops it at random,
  flips it at random and converts it to a float tensor, batched by a `DataLoader` (`--workers` processes), as
  torchvision's CIFAR10 + `RandomCrop(32, padding=2)` + `RandomHorizontalFlip` + `ToTensor` do.

After each epoch the test accuracy (with the recipe's test-time flip) is measured outside the clock;
time-to-82% is the training time at the end of the first epoch that reaches 82%. The two sides alternate epoch
by epoch, so that a noisy shared machine slows both alike.

    python benchmarks/cifar10_speed.py                    # writes benchmarks/results_cifar10_speed.json
    python benchmarks/cifar10_speed.py --quick --out /tmp/c.json   # a smoke test on 2,000 images
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from dla.config import load_config
from dla.data import load_splits
from dla.data.loader import TensorLoader, augment
from dla.data.root import resolve_data_root
from dla.models import ModelInputs, build_model
from dla.train.optim import build_optimizer, build_scheduler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info

DEFAULT_OUT = Path(__file__).resolve().parent / "results_cifar10_speed.json"
TARGET = 0.82


class TextbookCifar(Dataset):
    """One image at a time: uint8 (C, H, W) -> PIL -> pad + random crop -> random flip -> float (C, H, W)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, pad: int) -> None:
        self.images = x.permute(0, 2, 3, 1).numpy()  # (N, H, W, C), as torchvision's CIFAR10 holds them
        self.labels, self.pad = y.tolist(), pad

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, ImageOps

        img = Image.fromarray(self.images[i])
        w, h = img.size
        padded = ImageOps.expand(img, border=self.pad, fill=0)
        dx, dy = np.random.randint(0, 2 * self.pad + 1, size=2)
        img = padded.crop((dx, dy, dx + w, dy + h))
        if np.random.rand() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        arr = np.asarray(img, dtype=np.float32) / 255
        return torch.from_numpy(arr).permute(2, 0, 1), self.labels[i]


class Side:
    """One contestant: its own copy of the model, optimizer and schedule, and its batches."""

    def __init__(self, name: str, cfg: Any, splits: Any, steps: int, batches: Any) -> None:
        torch.manual_seed(0)
        inputs = ModelInputs(splits.input_shape, len(splits.classes), splits.mean, splits.std,
                             sample=splits.train.x[:5000])
        self.name, self.cfg, self.batches = name, cfg, batches
        self.model = build_model(cfg.model, inputs).to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, steps, cfg.train.epochs)
        self.seconds, self.images, self.history = 0.0, 0, []

    def train_epoch(self, epoch: int) -> None:
        self.model.train()
        t0 = time.perf_counter()
        for x, y in self.batches(epoch):
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(self.model(x).float(), y, label_smoothing=self.cfg.train.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.images += len(y)
        self.seconds += time.perf_counter() - t0

    @torch.no_grad()
    def test_accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.model.eval()
        correct = 0
        for i in range(0, len(y), 1000):
            xb = (x[i:i + 1000].float() / 255).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = self.model(xb).float() + self.model(xb.flip(-1)).float()
            correct += int((logits.argmax(1) == y[i:i + 1000]).sum())
        return correct / len(y)


def ours(splits: Any, cfg: Any) -> Iterator:
    loader = TensorLoader(splits.train.x, splits.train.y, cfg.data.batch_size, shuffle=True, drop_last=True)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader.set_epoch(epoch)
        g = torch.Generator().manual_seed(epoch)
        for x, y in loader:
            yield augment(x, cfg.data.augment, g).float() / 255, y

    return batches


def textbook(splits: Any, cfg: Any, workers: int) -> Iterator:
    data = TextbookCifar(splits.train.x, splits.train.y, cfg.data.augment.crop_padding)
    loader = DataLoader(data, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    return lambda epoch: iter(loader)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4, help="epochs of the recipe's schedule (4 reach 82%% here)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the textbook side")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--quick", action="store_true", help="2,000 training images, 1 epoch: a smoke test")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    epochs = 1 if args.quick else args.epochs
    extra = ["data.limit_train=3000", "data.val_size=1000", "data.limit_test=1000"] if args.quick else []
    cfg = load_config("cifar10_fast", [f"train.epochs={epochs}", *extra])
    splits = load_splits(cfg.data, resolve_data_root(args.data_root), cfg.seed)
    steps = len(splits.train) // cfg.data.batch_size
    sides = [Side("dla", cfg, splits, steps, ours(splits, cfg)),
             Side("textbook", cfg, splits, steps, textbook(splits, cfg, args.workers))]
    for epoch in range(1, epochs + 1):
        for side in sides:
            side.train_epoch(epoch)
            acc = side.test_accuracy(splits.test.x, splits.test.y)
            side.history.append({"epoch": epoch, "train_seconds": round(side.seconds, 2), "test_accuracy": acc})
            print(f"{side.name:9s} epoch {epoch}: {side.seconds:7.1f} s  {side.images / side.seconds:6.0f} img/s  "
                  f"test {100 * acc:.2f}%", flush=True)
    result = {"machine": machine_info(torch.get_num_threads(), torch.device("cpu")),
              "data": splits.spec.source or splits.spec.name, "train_images": len(splits.train),
              "epochs": epochs, "workers": args.workers, "target": TARGET, "sides": {}}
    for side in sides:
        hit = next((h["train_seconds"] for h in side.history if h["test_accuracy"] >= TARGET), None)
        result["sides"][side.name] = {"images_per_s": round(side.images / side.seconds, 1),
                                      "time_to_target_s": hit, "history": side.history}
    a, b = (result["sides"][s] for s in ("dla", "textbook"))
    result["speedup_images_per_s"] = round(a["images_per_s"] / b["images_per_s"], 2)
    if a["time_to_target_s"] and b["time_to_target_s"]:
        result["speedup_time_to_target"] = round(b["time_to_target_s"] / a["time_to_target_s"], 2)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "sides"} | {
        s: {k: v for k, v in r.items() if k != "history"} for s, r in result["sides"].items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
