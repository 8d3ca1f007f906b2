"""Benchmark: `dla run dante_char` against nanoGPT's train.py on the same text, split, model size and batch.

nanoGPT (https://github.com/karpathy/nanoGPT) is not a dependency: pass its checkout with `--nanogpt PATH`; the
script copies its train.py, model.py, configurator.py and config/ into a temporary folder (the checkout is not
touched), writes Dante's Inferno there in nanoGPT's format (train.bin / val.bin / meta.pkl, the first 90% of the
characters train, the rest validate, exactly dla's split), and skips with a message when PATH has no train.py.

Speed (default): training tokens per second at nanoGPT's CPU recipe size (4 layers, 4 heads, 128 wide, context
64, batch 12, dropout 0), both sides as real processes with the same thread count. Each side trains `--iters`
steps; the second half of them is timed (nanoGPT: the mean of its per-iteration `time` lines; dla: the
tokens/s it prints for the interval between two evaluations), so start-up and warm-up are left out. Sides run
interleaved, `--rounds` times, so a noisy shared machine slows all alike; we report the median per side and
ratios against nanoGPT eager (its CPU recipe, --compile=False). dla's variants: fp32 eager, and bf16
autocast on CPU (`train.amp_cpu=true`, only on CPUs with native bf16); `--compile` adds torch.compile on
both sides.

Quality (`--quality`): nanoGPT's CPU recipe for 2000 iterations (its README command, eval_iters=20), the same
recipe in dla, and `dla run dante_char` (its own defaults: batch 16, lr 2e-3, bf16 where the CPU has it),
once each: val loss at every evaluation, and wall time.

Run from the repository root:

    python benchmarks/char_gpt.py --nanogpt ../nanoGPT --threads 2            # speed
    python benchmarks/char_gpt.py --nanogpt ../nanoGPT --threads 2 --quality  # + the 2000-step runs
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info

from dla.data import resolve_data_root
from dla.text.corpus import load_corpus

DEFAULT_OUT = Path(__file__).resolve().parent / "results_char_gpt.json"
B, T = 12, 64  # nanoGPT's CPU recipe
NANOGPT_RECIPE = ["config/train_shakespeare_char.py", "--dataset=dante_char", "--device=cpu", "--eval_iters=20",
                  "--log_interval=1", f"--block_size={T}", f"--batch_size={B}", "--n_layer=4", "--n_head=4",
                  "--n_embd=128", "--lr_decay_iters=2000", "--dropout=0.0"]
DLA_RECIPE = ["data.batch_size=12", "model.n_layer=4", "model.n_head=4", "model.n_embd=128", "lm.block_size=64",
              "model.dropout=0.0", "lm.sample_tokens=0", "tracking.tensorboard=false", "tracking.progress=off"]


def prepare_nanogpt(checkout: Path, work: Path, data_root: Path) -> Path:
    """A private copy of nanoGPT's scripts with Dante in data/dante_char/, split exactly like dla's."""
    for name in ("train.py", "model.py", "configurator.py"):
        shutil.copy(checkout / name, work / name)
    shutil.copytree(checkout / "config", work / "config")
    corpus = load_corpus("dante_inferno", data_root, "char", 0.9, T)
    data = work / "data" / "dante_char"
    data.mkdir(parents=True)
    corpus.train.numpy().astype(np.uint16).tofile(data / "train.bin")
    corpus.val.numpy().astype(np.uint16).tofile(data / "val.bin")
    chars = corpus.tokenizer.chars
    with open(data / "meta.pkl", "wb") as f:  # nanoGPT reads its vocabulary from here
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": corpus.tokenizer.index}, f)
    return work


def run(cmd: list[str], cwd: Path, threads: int) -> tuple[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout, seconds


def nanogpt_speed(work: Path, iters: int, threads: int, compile_: bool) -> float:
    out, _ = run([sys.executable, "train.py", *NANOGPT_RECIPE, f"--max_iters={iters}", "--eval_interval=1000000",
                  "--eval_iters=1", f"--compile={compile_}", f"--out_dir={work / 'out'}"], work, threads)
    ms = [float(m.group(2)) for m in re.finditer(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms", out)
          if int(m.group(1)) >= iters // 2]
    return B * T / (statistics.mean(ms) / 1000)


def dla_speed(work: Path, iters: int, threads: int, overrides: list[str]) -> float:
    out, _ = run([sys.executable, "-m", "dla.cli", "run", "dante_char", *DLA_RECIPE, f"lm.max_iters={iters}",
                  f"lm.eval_interval={iters // 2}", "lm.eval_iters=1", *overrides, "--out", str(work / "dla")],
                 work, threads)
    speeds = re.findall(r"step +(\d+)/\d+ .* ([\d,]+) tok/s", out)
    return float(next(s for step, s in speeds if int(step) == iters).replace(",", ""))


def nanogpt_quality(work: Path, threads: int) -> dict[str, Any]:
    out, seconds = run([sys.executable, "train.py", *NANOGPT_RECIPE, "--max_iters=2000", "--compile=False",
                        f"--out_dir={work / 'out_q'}"], work, threads)
    val = {int(s): float(v) for s, v in re.findall(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)", out)}
    return {"val_loss": val, "wall_seconds": round(seconds, 1)}


def dla_quality(work: Path, threads: int, overrides: list[str]) -> dict[str, Any]:
    out, seconds = run([sys.executable, "-m", "dla.cli", "run", "dante_char", "lm.sample_tokens=0",
                        "tracking.progress=off", *overrides, "--out", str(work / "dla_q")], work, threads)
    val = {int(s): float(v) for s, v in re.findall(r"step +(\d+)/\d+ +train loss [\d.]+ +val loss ([\d.]+)", out)}
    return {"val_loss": val, "wall_seconds": round(seconds, 1), "overrides": overrides}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanogpt", type=Path, required=True, help="a nanoGPT checkout (its train.py)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=200, help="steps per speed measurement (the second half timed)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile on both sides")
    ap.add_argument("--quality", action="store_true", help="also the 2000-step runs (val loss, wall time)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    if not (args.nanogpt / "train.py").is_file():
        print(f"skipped: no nanoGPT checkout at {args.nanogpt} (clone https://github.com/karpathy/nanoGPT and pass "
              "--nanogpt PATH)")
        return
    from dla.runtime import cpu_has_bf16

    bf16 = cpu_has_bf16()
    with tempfile.TemporaryDirectory() as tmp:
        work = prepare_nanogpt(args.nanogpt, Path(tmp), resolve_data_root(args.data_root))
        sides: dict[str, Any] = {
            "nanoGPT eager": lambda: nanogpt_speed(work, args.iters, args.threads, False),
            "dla fp32 eager": lambda: dla_speed(work, args.iters, args.threads, ["train.amp_cpu=false"]),
        }
        if bf16:
            sides["dla bf16 eager"] = lambda: dla_speed(work, args.iters, args.threads, ["train.amp_cpu=true"])
        if args.compile:
            sides["nanoGPT compile"] = lambda: nanogpt_speed(work, args.iters, args.threads, True)
            sides["dla fp32 compile"] = lambda: dla_speed(work, args.iters, args.threads,
                                                          ["train.compile=true", "train.amp_cpu=false"])
            if bf16:
                sides["dla bf16 compile"] = lambda: dla_speed(work, args.iters, args.threads,
                                                              ["train.compile=true", "train.amp_cpu=true"])
        speeds: dict[str, list[float]] = {k: [] for k in sides}
        for r in range(args.rounds):
            for label, fn in sides.items():
                speeds[label].append(fn())
                print(f"round {r + 1}: {label:<18} {speeds[label][-1]:>9,.0f} tokens/s", flush=True)
        median = {k: statistics.median(v) for k, v in speeds.items()}
        base = median["nanoGPT eager"]
        results: dict[str, Any] = {
            "machine": machine_info(args.threads, torch.device("cpu"), cpu_bf16=str(bf16)),
            "setup": {"batch": B, "context": T, "layers": 4, "heads": 4, "width": 128, "iters": args.iters,
                      "rounds": args.rounds},
            "tokens_per_second": {k: {"median": round(m), "runs": [round(x) for x in speeds[k]],
                                      "vs_nanogpt_eager": round(m / base, 2)} for k, m in median.items()},
        }
        if args.compile:
            results["compile_ratio"] = round(median["dla fp32 compile"] / median["nanoGPT compile"], 2)
        if args.quality:
            results["quality"] = {
                "nanoGPT CPU recipe": nanogpt_quality(work, args.threads),
                # the same recipe in dla (context 64, lr 1e-3, fp32, nanoGPT's 20 eval batches): a sanity check
                "dla, nanoGPT's recipe": dla_quality(work, args.threads, [
                    "data.batch_size=12", "optim.lr=0.001", "train.amp_cpu=false"]),
                "dla dante_char": dla_quality(work, args.threads, []),
            }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for k, m in median.items():
        print(f"{k:<18} {m:>9,.0f} tokens/s  {m / base:.2f}x nanoGPT eager")
    for k, q in results.get("quality", {}).items():
        print(f"{k}: val loss {q['val_loss']}  ({q['wall_seconds']} s)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
