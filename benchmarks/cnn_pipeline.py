"""Benchmark: the 9-layer CNN's training step through dla's on-device pipeline vs the textbook input pipeline.

Both sides train the same model (`cnn_fmnist`'s 9-layer plain CNN, channels_last) from the same weights with the
same optimizer, schedule and batch size, and both augment every training image with a ±pad random crop and a
horizontal flip:

* ours: `Trainer.train_one_epoch` itself: the uint8 training set is one tensor on the device, batches are slices
  of a seeded permutation, crop and flip are batched tensor code (`dla.data.loader.augment`).
* textbook: a `Dataset` whose `__getitem__` turns one image into a PIL image, pads it, crops it at a random offset,
  flips it at random and converts it back to a float tensor (torchvision's `RandomCrop(padding=...)`,
  `RandomHorizontalFlip()`, `ToTensor()`), batched by a `DataLoader` with worker processes.

Two input sizes: Fashion-MNIST (real, 1 x 28 x 28) and CIFAR-sized 3 x 32 x 32 images (random pixels standing
in for CIFAR-10, which is not on this machine; throughput does not depend on the pixel values). The sides run
interleaved, so load from elsewhere slows both alike. The GPU numbers come from the same script with
`--device cuda`.

    python benchmarks/cnn_pipeline.py --out benchmarks/results_cnn_pipeline_cpu.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_loop import OursSide, Side, machine_info, mean_std

from dla.config import ExperimentConfig, load_config
from dla.data import Splits, load_splits, resolve_data_root
from dla.data.registry import ImageSet
from dla.models import ModelInputs, build_model
from dla.runtime import pick_device
from dla.train.optim import build_optimizer, build_scheduler


class PilAugmentDataset(Dataset):
    """One image at a time through PIL: pad, random crop, random flip, to float tensor (torchvision style)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, padding: int) -> None:
        self.images, self.labels, self.padding = images, labels, padding  # (N, C, H, W) uint8, (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        arr = self.images[i]
        c, h, w = arr.shape
        img = Image.fromarray(arr[0] if c == 1 else arr.transpose(1, 2, 0))
        img = ImageOps.expand(img, border=self.padding, fill=0)  # RandomCrop(padding=p)
        top, left = random.randint(0, 2 * self.padding), random.randint(0, 2 * self.padding)
        img = img.crop((left, top, left + w, top + h))
        if random.random() < 0.5:  # RandomHorizontalFlip
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out = np.asarray(img, dtype=np.uint8).reshape(h, w, c)  # ToTensor: HWC -> CHW float in [0, 1]
        return torch.from_numpy(out.copy()).permute(2, 0, 1).float().div(255), int(self.labels[i])


class TextbookSide(Side):
    def __init__(self, cfg: ExperimentConfig, model: torch.nn.Module, splits: Splits, device: torch.device,
                 workers: int) -> None:
        super().__init__(f"textbook: PIL transforms + DataLoader(num_workers={workers})")
        self.cfg, self.model, self.device = cfg, model, device
        d = cfg.data
        data = PilAugmentDataset(splits.train.x.numpy(), splits.train.y.numpy(), d.augment.crop_padding)
        self.loader = DataLoader(data, batch_size=d.batch_size, shuffle=True, drop_last=True, num_workers=workers,
                                 pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                                 generator=torch.Generator().manual_seed(cfg.seed))
        self.optimizer = build_optimizer(model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, len(self.loader), cfg.train.epochs)
        self.images_per_epoch = len(self.loader) * d.batch_size
        self.channels_last = cfg.train.channels_last

    def train_epoch(self) -> dict[str, float]:
        self.model.train()
        total, correct, seen = 0.0, 0, 0
        for x, y in self.loader:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", torch.bfloat16, enabled=self.device.type == "cuda"):
                logits = self.model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.train.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            total += loss.item() * y.size(0)
            correct += (logits.argmax(1) == y).sum().item()
            seen += y.size(0)
        return {"loss": total / seen, "accuracy": correct / seen}


def cifar_sized(n: int, seed: int) -> Splits:
    """Random 3x32x32 uint8 images with random labels, in the shape of CIFAR-10's splits."""
    g = torch.Generator().manual_seed(seed)

    def part(k: int) -> ImageSet:
        return ImageSet(torch.randint(0, 256, (k, 3, 32, 32), dtype=torch.uint8, generator=g),
                        torch.randint(0, 10, (k,), generator=g), [str(i) for i in range(10)])

    from dla.data.registry import get_dataset

    return Splits(part(n), part(1000), part(1000), get_dataset("cifar10"), (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))


def bench(name: str, cfg: ExperimentConfig, splits: Splits, device: torch.device, args: argparse.Namespace
          ) -> dict[str, Any]:
    inputs = ModelInputs(splits.input_shape, len(splits.classes), splits.mean, splits.std)
    torch.manual_seed(cfg.seed)
    init = build_model(cfg.model, inputs).state_dict()

    def model() -> torch.nn.Module:
        m = build_model(cfg.model, inputs)
        m.load_state_dict(init)
        return m.to(device).to(memory_format=torch.channels_last)

    sides: list[Side] = [OursSide(cfg, model(), splits, device)]
    sides[0].name = "dla: on-device tensors + batched augmentation"
    sides += [TextbookSide(cfg, model(), splits, device, w) for w in args.workers]
    for side in sides:  # untimed warm-up epoch (worker start-up, allocator, oneDNN/cuDNN kernel choice)
        side.timed(side.train_epoch)
    times: dict[str, list[float]] = {s.name: [] for s in sides}
    for _ in range(args.repeats):
        for side in sides:
            _, seconds = side.timed(side.train_epoch)
            times[side.name].append(side.images_per_epoch / seconds)
    for side in sides:
        side.close()
    ours = mean_std(times[sides[0].name])[0]
    rows = [{"pipeline": s.name, "images_per_s": mean_std(times[s.name]), "ours_faster_by": ours /
             mean_std(times[s.name])[0]} for s in sides]
    return {"input": name, "shape": list(splits.input_shape), "train_images": len(splits.train), "rows": rows}


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for r in results["benchmarks"]:
        lines += [f"\n{r['input']} ({'x'.join(map(str, r['shape']))}, {r['train_images']:,} training images per "
                  f"epoch, batch {results['batch_size']}):\n",
                  f"| pipeline | images/s (mean ± std, {results['repeats']} epochs) | ours is faster by |",
                  "|---|---:|---:|"]
        for row in r["rows"]:
            m, s = row["images_per_s"]
            lines.append(f"| {row['pipeline']} | {m:,.0f} ± {s:,.0f} | {row['ours_faster_by']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--train-images", type=int, default=10_000, help="training images per epoch (both inputs)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=lambda s: [int(w) for w in s.split(",")], default=[2])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    overrides = [f"data.limit_train={args.train_images + 1000}", "data.val_size=1000", "tracking.tensorboard=false",
                 "tracking.progress=off", "train.channels_last=true", *args.extra]
    cfg = load_config("cnn_fmnist", overrides)
    results: dict[str, Any] = {"machine": machine_info(device), "batch_size": cfg.data.batch_size,
                               "repeats": args.repeats, "config": overrides, "benchmarks": []}
    fmnist = load_splits(cfg.data, resolve_data_root(args.data_root), cfg.seed)
    results["benchmarks"].append(bench("Fashion-MNIST", cfg, fmnist, device, args))
    cifar_cfg = load_config("cnn_fmnist", [*overrides, "data.augment.crop_padding=4"])
    results["benchmarks"].append(bench("CIFAR-sized", cifar_cfg, cifar_sized(args.train_images, 0), device, args))
    text = markdown(results)
    print(text)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
