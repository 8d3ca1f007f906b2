"""Benchmark: dla's training loop against the textbook `Dataset` + `DataLoader` loop on MNIST.

Both sides train the `mnist_mlp` experiment's model from the same initial weights, with the same optimizer
(AdamW through `dla.train.optim.build_optimizer`), learning-rate schedule, label smoothing and batch size,
and without augmentation, so the comparison is about the data path and the loop alone:

* ours: `dla.train.loop.Trainer` itself. The whole training split is one uint8 tensor; `TensorLoader` slices a
  seeded permutation into batches and `Trainer.train_one_epoch` converts each batch with `.float().div_(255)`.
  We time `train_one_epoch` and `evaluate`, not `fit`, which also writes checkpoints and metrics every epoch.
* textbook: a `torch.utils.data.Dataset` whose `__getitem__` returns one (float (1, 28, 28) in [0, 1], int label)
  pair, as torchvision's `MNIST` + `ToTensor` does (`--textbook-pil` adds their PIL round trip too), batched by
  a `DataLoader` with `num_workers` 0 and 2 (`--workers`), and the usual loop with `loss.item()` bookkeeping.

By default the DataLoader draws its batches through a sampler that replays TensorLoader's permutation, and each
side keeps its own global RNG state (dropout), so both sides compute the same batches with the same masks: the
same accuracy curve, and the time-to-target ratio measures speed alone. `--textbook-shuffle` uses a plain
`DataLoader(shuffle=True)` instead (same cost per epoch, different order).

Two measurements, the sides interleaved so that a noisy shared machine slows them alike:
1. throughput: images/s over whole training epochs, `--repeats` times after one untimed warm-up epoch;
2. time to target: from the same initial weights, train epoch by epoch and evaluate on the validation split after
   each epoch; the wall time (training + evaluation) until validation accuracy first reaches `--target`.
3. the data path alone: images/s of one epoch of float batches on the device, no model; it shows how much of
   an epoch the data path is, next to the model's forward and backward passes.

Run from the repository root, with MNIST under $DLA_DATA (or --data-root):

    DLA_DATA=/path/to/data python benchmarks/mnist_loop.py --out benchmarks/mnist_loop.json
    python benchmarks/mnist_loop.py --quick   # smoke test, well under a minute
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

import dla
from dla.config import ExperimentConfig, load_config
from dla.data import Splits, load_splits, resolve_data_root
from dla.models import ModelInputs, build_model
from dla.runs import RunDir
from dla.runtime import pick_device
from dla.train.loop import Trainer
from dla.train.optim import build_optimizer, build_scheduler

EXPERIMENT = "mnist_mlp"


# --------------------------------------------------------------------------------------------------
# The textbook side


class MnistDataset(Dataset):
    """One sample at a time from uint8 arrays, like torchvision's `MNIST(transform=ToTensor())`."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, pil: bool = False) -> None:
        self.images = images  # (N, 28, 28) uint8
        self.labels = labels  # (N,) int64
        self.pil = pil

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i]
        if self.pil:  # torchvision: Image.fromarray(img.numpy(), mode="L"), then ToTensor's np.array(pic)
            from PIL import Image

            img = np.array(Image.fromarray(img), np.uint8, copy=True)
        # ToTensor: (H, W) uint8 -> (H, W, 1) -> (1, H, W) -> float in [0, 1]
        x = torch.from_numpy(img).view(img.shape[0], img.shape[1], 1).permute(2, 0, 1).contiguous()
        return x.float().div(255), int(self.labels[i])


class EpochPermutation(Sampler[int]):
    """The permutation TensorLoader uses for (seed, epoch): both sides see the same batches in the same order."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)  # as TensorLoader.generator
        return iter(torch.randperm(self.n, generator=g).tolist())


# --------------------------------------------------------------------------------------------------
# The two sides behind one interface


@dataclass
class Side:
    name: str
    images_per_epoch: int = 0
    rng: torch.Tensor = field(default_factory=torch.get_rng_state)  # this side's dropout RNG
    epoch: int = 0

    def train_epoch(self) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self) -> float:
        raise NotImplementedError

    def data_epoch(self) -> int:
        """One epoch of the data path alone: float batches on the device, no model. Returns the images seen."""
        raise NotImplementedError

    def timed(self, fn: Any) -> tuple[Any, float]:
        """Run fn with this side's RNG state; return (result, seconds)."""
        torch.set_rng_state(self.rng)
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
        self.rng = torch.get_rng_state()
        return out, seconds

    def close(self) -> None:
        pass


class OursSide(Side):
    """dla's Trainer as it is: TensorLoader batches, `train_one_epoch`, `evaluate`."""

    def __init__(self, cfg: ExperimentConfig, model: nn.Module, splits: Splits, device: torch.device) -> None:
        super().__init__("dla: TensorLoader + Trainer")
        self._tmp = tempfile.TemporaryDirectory(prefix="dla-bench-")
        self.trainer = Trainer(cfg, model, splits, device, RunDir(Path(self._tmp.name)))
        self.images_per_epoch = len(self.trainer.train_loader) * cfg.data.batch_size

    def train_epoch(self) -> dict[str, float]:
        self.epoch += 1
        return self.trainer.train_one_epoch(self.epoch)

    def evaluate(self) -> float:
        return self.trainer.evaluate(self.trainer.val_loader)["accuracy"]

    def data_epoch(self) -> int:
        n = 0
        for x, *_ in self.trainer.train_loader:  # as in train_one_epoch (augment is off)
            n += x.float().div_(255).shape[0]
        return n

    def close(self) -> None:
        self.trainer.tracker.close()
        self._tmp.cleanup()


class TextbookSide(Side):
    """Dataset + DataLoader + the standard loop, on the same model, optimizer and schedule as Trainer."""

    def __init__(self, cfg: ExperimentConfig, model: nn.Module, splits: Splits, device: torch.device,
                 workers: int, shuffle: bool, pil: bool) -> None:
        super().__init__(f"textbook: Dataset + DataLoader(num_workers={workers})")
        self.cfg, self.model, self.device = cfg, model, device
        d = cfg.data
        train = MnistDataset(splits.train.x[:, 0].numpy(), splits.train.y.numpy(), pil)
        val = MnistDataset(splits.val.x[:, 0].numpy(), splits.val.y.numpy(), pil)
        g = torch.Generator().manual_seed(cfg.seed)  # the loader's seeds come from here, not from the global RNG
        self.sampler = None if shuffle else EpochPermutation(len(train), cfg.seed)
        pin = device.type == "cuda"
        self.train_loader = DataLoader(train, batch_size=d.batch_size, shuffle=shuffle, sampler=self.sampler,
                                       num_workers=workers, drop_last=True, generator=g, pin_memory=pin)
        self.val_loader = DataLoader(val, batch_size=d.eval_batch_size, shuffle=False, num_workers=workers,
                                     pin_memory=pin)
        self.optimizer = build_optimizer(model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, len(self.train_loader), cfg.train.epochs)
        self.images_per_epoch = len(self.train_loader) * d.batch_size

    def train_epoch(self) -> dict[str, float]:
        self.epoch += 1
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)
        self.model.train()
        total_loss, correct, seen = 0.0, 0, 0
        for x, y in self.train_loader:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            logits = self.model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.train.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            total_loss += loss.item() * y.size(0)
            correct += (logits.argmax(1) == y).sum().item()
            seen += y.size(0)
        return {"loss": total_loss / seen, "accuracy": correct / seen}

    def data_epoch(self) -> int:
        n = 0
        for x, y in self.train_loader:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            n += x.shape[0]
        return n

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        correct, seen = 0, 0
        for x, y in self.val_loader:
            x, y = x.to(self.device), y.to(self.device)
            correct += (self.model(x).argmax(1) == y).sum().item()
            seen += y.size(0)
        return correct / seen


# --------------------------------------------------------------------------------------------------
# Measurements


def make_sides(cfg: ExperimentConfig, splits: Splits, init: dict[str, torch.Tensor], device: torch.device,
               args: argparse.Namespace) -> list[Side]:
    inputs = ModelInputs(splits.input_shape, len(splits.classes), splits.mean, splits.std)

    def model() -> nn.Module:
        m = build_model(cfg.model, inputs)
        m.load_state_dict(init)
        return m.to(device)

    sides: list[Side] = [OursSide(cfg, model(), splits, device)]
    for w in args.workers:
        sides.append(TextbookSide(cfg, model(), splits, device, w, args.textbook_shuffle, args.textbook_pil))
    rng = torch.Generator().manual_seed(cfg.seed).get_state()
    for side in sides:
        side.rng = rng.clone()  # every side starts from the same dropout RNG state
    return sides


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def measure_throughput(sides: list[Side], args: argparse.Namespace) -> dict[str, Any]:
    for side in sides:
        _, s = side.timed(side.train_epoch)
        print(f"  warm-up  {side.name:<48} {s:7.2f} s", flush=True)
    per_side: dict[str, list[float]] = {s.name: [] for s in sides}
    for r in range(args.repeats):
        order = sides[r % len(sides):] + sides[: r % len(sides)]  # rotate: no side always runs first
        for side in order:
            _, s = side.timed(lambda side=side: [side.train_epoch() for _ in range(args.epochs_throughput)])
            ips = side.images_per_epoch * args.epochs_throughput / s
            per_side[side.name].append(ips)
            print(f"  repeat {r + 1}/{args.repeats} {side.name:<48} {s:7.2f} s  {ips:9.0f} images/s", flush=True)
    out = {}
    for side in sides:
        m, sd = mean_std(per_side[side.name])
        out[side.name] = {"images_per_s": per_side[side.name], "mean": m, "std": sd,
                          "images_per_epoch": side.images_per_epoch}
    return out


def measure_data_path(sides: list[Side], args: argparse.Namespace) -> dict[str, Any]:
    """images/s of the data path alone (batches as float tensors on the device), `--repeats` passes per side."""
    per_side: dict[str, list[float]] = {s.name: [] for s in sides}
    for r in range(args.repeats):
        for side in sides[r % len(sides):] + sides[: r % len(sides)]:
            n, s = side.timed(side.data_epoch)
            per_side[side.name].append(n / s)
    out = {}
    for side in sides:
        m, sd = mean_std(per_side[side.name])
        out[side.name] = {"images_per_s": per_side[side.name], "mean": m, "std": sd}
        print(f"  data only {side.name:<48} {m:10.0f} ± {sd:.0f} images/s", flush=True)
    return out


def measure_time_to_target(sides: list[Side], args: argparse.Namespace) -> dict[str, Any]:
    """Epoch by epoch, sides interleaved; each side's clock counts only its own training and evaluation."""
    state = {s.name: {"seconds": 0.0, "val_accuracy": [], "epoch_seconds": [], "epochs_to_target": None,
                      "seconds_to_target": None} for s in sides}
    active = list(sides)
    for epoch in range(1, args.max_epochs_to_target + 1):
        for side in list(active):
            (_, acc), s = side.timed(lambda side=side: (side.train_epoch(), side.evaluate()))
            st = state[side.name]
            st["seconds"] += s
            st["val_accuracy"].append(acc)
            st["epoch_seconds"].append(s)
            print(f"  epoch {epoch:2d} {side.name:<48} val acc {100 * acc:6.2f}%  {st['seconds']:7.2f} s",
                  flush=True)
            if acc >= args.target:
                st["epochs_to_target"], st["seconds_to_target"] = epoch, st["seconds"]
                active.remove(side)
        if not active:
            break
    return state


# --------------------------------------------------------------------------------------------------
# Report


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "dla": dla.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.2f}x"


def markdown(results: dict[str, Any]) -> str:
    a, m = results["args"], results["machine"]
    thr, ttt = results["throughput"], results["time_to_target"]
    ours = next(iter(thr))
    target = f"{100 * a['target']:g}%"
    lines = [
        f"MNIST, `{EXPERIMENT}` model ({results['parameters']:,} parameters), batch size {a['batch_size']}, "
        f"{results['train_images']:,} training / {results['val_images']:,} validation images, no augmentation, "
        f"{results['schedule']} schedule.",
        "",
        f"| loop | images/s (mean ± std, {a['repeats']} × {a['epochs_throughput']} epoch) | ours is faster by "
        f"| epochs to {target} | seconds to {target} | ours is faster by | data path alone, images/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    ours_sec = ttt[ours]["seconds_to_target"]
    for name, t in thr.items():
        speed = thr[ours]["mean"] / t["mean"]
        tt = ttt[name]
        sec = tt["seconds_to_target"]
        epochs = tt["epochs_to_target"] if tt["epochs_to_target"] is not None else f"not in {len(tt['val_accuracy'])}"
        time_ratio = sec / ours_sec if sec is not None and ours_sec else None
        lines.append(f"| {name} | {t['mean']:,.0f} ± {t['std']:,.0f} | {_fmt_ratio(speed)} "
                     f"| {epochs} "
                     f"| {f'{sec:.1f}' if sec is not None else 'n/a'} | {_fmt_ratio(time_ratio)} "
                     f"| {results['data_path_only'][name]['mean']:,.0f} |")
    lines += [
        "",
        "Training images/s over whole epochs (forward, backward, AdamW step, bookkeeping); seconds to target count "
        "training and validation after every epoch; data path alone: one epoch of float batches, no model.",
        "",
        f"Machine: {m['cpu']}, {m['cpus_usable']} usable of {m['cpu_count']} CPUs, torch {m['torch']} with "
        f"{m['torch_threads']} threads, Python {m['python']}, device {m['device']}"
        + (f" ({m['gpu']})" if "gpu" in m else "") + f"; {m['date']}.",
        "Command: `" + " ".join(["python", *results["argv"]]) + "`",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs-throughput", type=int, default=1, help="epochs per timed throughput repeat")
    p.add_argument("--repeats", type=int, default=3, help="timed throughput repeats per side")
    p.add_argument("--target", type=float, default=None, help="validation accuracy to reach (default 0.98; "
                   "--quick: 0.9)")
    p.add_argument("--max-epochs-to-target", type=int, default=10, help="give up on the target after this many")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=lambda s: [int(w) for w in s.split(",")], default=[0, 2],
                   help="comma-separated DataLoader num_workers values to compare (default 0,2)")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                   help="cosine: the experiment's (1 warm-up epoch, over --max-epochs-to-target epochs); "
                        "constant: the peak lr throughout; identical on both sides either way")
    p.add_argument("--textbook-shuffle", action="store_true",
                   help="DataLoader(shuffle=True) instead of replaying TensorLoader's order")
    p.add_argument("--textbook-pil", action="store_true",
                   help="go through a PIL image in __getitem__, as torchvision's MNIST does")
    p.add_argument("--device", default="cpu", help="cpu (the point of this benchmark), cuda, ...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for both sides, e.g. --set model.width=128 (repeatable)")
    p.add_argument("--data-root", default=None, help="default: $DLA_DATA, else ./data")
    p.add_argument("--out", type=Path, default=None, help="write every number to this JSON file")
    p.add_argument("--markdown", type=Path, default=None, help="also write the Markdown table to this file")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 5,000 training images, 1 repeat, at most 2 epochs to target 0.9")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.epochs_throughput = 1, 1
        args.max_epochs_to_target = min(args.max_epochs_to_target, 2)
    if args.target is None:
        args.target = 0.9 if args.quick else 0.98
    if min(args.repeats, args.epochs_throughput, args.max_epochs_to_target, args.batch_size) < 1:
        p.error("--repeats, --epochs-throughput, --max-epochs-to-target and --batch-size must be >= 1")
    return args


def config(args: argparse.Namespace, epochs: int) -> ExperimentConfig:
    overrides = [
        f"seed={args.seed}",
        f"device={args.device}",
        f"data.batch_size={args.batch_size}",
        "data.augment.crop_padding=0",
        "data.augment.flip=false",
        f"train.epochs={epochs}",  # the length of the lr schedule
        "tracking.tensorboard=false",
        "tracking.progress=off",
    ]
    if args.schedule == "constant":
        overrides += ["schedule.name=constant", "schedule.warmup_epochs=0"]
    if args.quick:
        overrides += ["data.limit_train=6000", "data.val_size=1000"]
    return load_config(EXPERIMENT, [*overrides, *args.extra])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    t_start = time.perf_counter()

    base = config(args, args.max_epochs_to_target)
    splits = load_splits(base.data, resolve_data_root(args.data_root), base.seed)
    inputs = ModelInputs(splits.input_shape, len(splits.classes), splits.mean, splits.std)
    torch.manual_seed(base.seed)
    model0 = build_model(base.model, inputs)
    init = copy.deepcopy(model0.state_dict())  # the same initial weights for every side and phase
    n_params = sum(p.numel() for p in model0.parameters())
    info = machine_info(device)
    print(f"{EXPERIMENT}: {n_params:,} parameters, {len(splits.train)} train / {len(splits.val)} val images, "
          f"batch {args.batch_size}, device {device}, {info['torch_threads']} torch threads, {info['cpu']}",
          flush=True)

    print(f"throughput: 1 warm-up + {args.repeats} x {args.epochs_throughput} timed epochs per side", flush=True)
    sides = make_sides(config(args, 1 + args.repeats * args.epochs_throughput), splits, init, device, args)
    try:
        throughput = measure_throughput(sides, args)
        print("data path alone (no model): one pass over the training split per repeat", flush=True)
        data_only = measure_data_path(sides, args)
    finally:
        for s in sides:
            s.close()

    print(f"time to {100 * args.target:g}% validation accuracy (at most {args.max_epochs_to_target} epochs)",
          flush=True)
    sides = make_sides(base, splits, init, device, args)
    try:
        time_to_target = measure_time_to_target(sides, args)
    finally:
        for s in sides:
            s.close()

    ours = sides[0].name
    summary = {}
    for s in sides[1:]:
        a, b = time_to_target[s.name]["seconds_to_target"], time_to_target[ours]["seconds_to_target"]
        summary[s.name] = {"throughput_speedup": throughput[ours]["mean"] / throughput[s.name]["mean"],
                           "time_to_target_speedup": a / b if a is not None and b else None}
    results = {
        "benchmark": "mnist_loop",
        "argv": sys.argv,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": info,
        "parameters": n_params,
        "train_images": len(splits.train),
        "val_images": len(splits.val),
        "schedule": base.schedule.name,
        "throughput": throughput,
        "data_path_only": data_only,
        "time_to_target": time_to_target,
        "speedup_of_ours": summary,
        "total_seconds": time.perf_counter() - t_start,
    }
    table = markdown(results)
    print("\n" + table)
    for name, s in summary.items():
        print(f"ours vs {name}: {_fmt_ratio(s['throughput_speedup'])} throughput, "
              f"{_fmt_ratio(s['time_to_target_speedup'])} time to {100 * args.target:g}%")
    print(f"total {results['total_seconds']:.0f} s", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n")
    return results


if __name__ == "__main__":
    main()
