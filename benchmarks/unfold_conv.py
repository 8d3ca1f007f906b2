"""Benchmark: `dla.nn.UnfoldConv2d` (unfold/fold + matrix products) against `nn.Conv2d` (oneDNN on CPU, cuDNN on CUDA).

For a few layer shapes of the lab's CNNs, both layers get the same weights and the same input, and we measure:

1. time: one forward + backward pass (`y = layer(x); y.backward(g)` with a fixed random upstream gradient g),
   `--warmup` untimed passes, then `--repeats` timed ones with the two sides interleaved so that a noisy shared
   machine slows both alike; we report the median, and the ratio ours / nn.Conv2d;
2. memory saved for backward: every tensor autograd keeps between forward and backward goes through
   `torch.autograd.graph.saved_tensors_hooks`; we add up the bytes of the distinct storages (the weight, which
   both sides keep, included). This is deterministic: no allocator statistics involved;
3. peak memory of one forward + backward, each side in a fresh process: the rise of the resident-set
   high-water mark on the CPU (ru_maxrss), `torch.cuda.max_memory_allocated` on a GPU;
4. the im2col buffer: C*K*K x L numbers per image, computed, not measured. Our forward and backward each
   materialise one such matrix (and backward one more for dcols) as a transient; saving it instead of x is
   the alternative design the module docstring discusses.

Before timing, each shape checks that the two sides agree (output and all gradients, float32 tolerance).
The first-layer shape (3 -> 64) has an input without gradient, as a network's first conv does.

Run from the repository root:

    python benchmarks/unfold_conv.py --threads 1                 # writes benchmarks/results_unfold_conv.json
    python benchmarks/unfold_conv.py --quick --out /tmp/uc.json  # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dla.nn import UnfoldConv2d

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info

DEFAULT_OUT = Path(__file__).resolve().parent / "results_unfold_conv.json"
MiB = 2**20


@dataclass(frozen=True)
class Layer:
    c_in: int
    c_out: int
    size: int  # square input, size x size
    kernel: int
    stride: int = 1
    padding: int = 1
    input_grad: bool = True  # False for a network's first layer: no gradient for the images

    @property
    def name(self) -> str:
        s = f", S{self.stride}" if self.stride != 1 else ""
        return f"{self.c_in}->{self.c_out}, {self.size}x{self.size}, K{self.kernel}{s}"


LAYERS = [
    Layer(16, 16, 28, 3),             # an MNIST CNN's / ResNet stage-1 conv
    Layer(32, 64, 14, 3, stride=2),   # a downsampling conv
    Layer(64, 64, 7, 3),              # a late, channel-heavy conv on a small map
    Layer(3, 64, 32, 3, input_grad=False),  # a CIFAR stem conv
]


def saved_bytes(layer: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward in one forward pass of `layer`."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    del y
    return sum(storages.values())


_PEAK_CHILD = """
import sys, torch
from torch import nn
from dla.nn import UnfoldConv2d

impl, c_in, c_out, size, k, stride, pad, batch, grad, dev = sys.argv[1:]
c_in, c_out, size, k, stride, pad, batch = map(int, (c_in, c_out, size, k, stride, pad, batch))
torch.set_num_threads(1)
cls = nn.Conv2d if impl == "conv" else UnfoldConv2d
layer = cls(c_in, c_out, k, stride=stride, padding=pad, bias=False).to(dev)
x = torch.randn(batch, c_in, size, size, device=dev).requires_grad_(grad == "1")
out = (size + 2 * pad - k) // stride + 1
g = torch.randn(batch, c_out, out, out, device=dev)
if dev == "cuda":
    layer(x).backward(g)  # warm-up: the caching allocator and cuDNN workspaces
    x.grad = None
    layer.zero_grad(set_to_none=True)
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    layer(x).backward(g); torch.cuda.synchronize(); print(torch.cuda.max_memory_allocated() - base)
else:
    # Linux resets the resident-set high-water mark (VmHWM) when 5 is written to clear_refs: after the reset it
    # is the live set, and one pass raises it by the pass's peak. A one-image pass first loads the kernels' code
    # and one-time buffers, which are not the pass's memory.
    def hwm():
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) * 1024
    def rss():
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) * 1024
    layer(x[:1].detach().requires_grad_(x.requires_grad)).backward(g[:1])  # load kernels, not batch-sized
    layer.zero_grad(set_to_none=True)
    open("/proc/self/clear_refs", "w").write("5")
    before = rss()
    layer(x).backward(g)
    print(hwm() - before)
"""


def peak_bytes(impl: str, spec: Layer, batch: int, device: torch.device) -> int:
    """Peak memory one forward + backward adds, in a fresh process: CUDA's max_memory_allocated on a GPU; on the
    CPU the rise of the resident-set high-water mark over the live inputs (a first pass, kernels' one-time
    buffers included; the gradients written count too)."""
    import subprocess

    args = [impl, spec.c_in, spec.c_out, spec.size, spec.kernel, spec.stride, spec.padding, batch,
            int(spec.input_grad), device.type]
    out = subprocess.run([sys.executable, "-c", _PEAK_CHILD, *map(str, args)], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return int(out.stdout.strip().splitlines()[-1])


def fwd_bwd(layer: nn.Module, x: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor | None]:
    x.grad = None
    layer.zero_grad(set_to_none=True)
    layer(x).backward(g)
    return [x.grad, *(p.grad for p in layer.parameters())]


def check_agree(conv: nn.Module, ours: nn.Module, x: torch.Tensor, g: torch.Tensor) -> float:
    """Largest absolute difference over the output and gradients; raises if they disagree."""
    with torch.no_grad():
        pairs = [(ours(x), conv(x))]
    pairs += list(zip(fwd_bwd(ours, x, g), fwd_bwd(conv, x, g), strict=True))
    worst = 0.0
    for a, b in pairs:
        if a is None and b is None:
            continue
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * max(1.0, b.abs().max().item()))
        worst = max(worst, (a - b).abs().max().item())
    return worst


def time_pass(layer: nn.Module, x: torch.Tensor, g: torch.Tensor, device: torch.device) -> float:
    x.grad = None
    layer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    layer(x).backward(g)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def bench_layer(spec: Layer, batch: int, bias: bool, warmup: int, repeats: int,
                device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    conv = nn.Conv2d(spec.c_in, spec.c_out, spec.kernel, stride=spec.stride, padding=spec.padding, bias=bias)
    conv = conv.to(device)
    ours = UnfoldConv2d.from_conv(conv)
    x = torch.randn(batch, spec.c_in, spec.size, spec.size, device=device).requires_grad_(spec.input_grad)
    with torch.no_grad():
        out = conv(x)
    g = torch.randn_like(out)
    l_out = out.shape[2] * out.shape[3]
    max_diff = check_agree(conv, ours, x, g)

    sides = {"conv": conv, "ours": ours}
    saved = {name: saved_bytes(layer, x) for name, layer in sides.items()}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(warmup):
        for layer in sides.values():
            time_pass(layer, x, g, device)
    for _ in range(repeats):  # interleaved: conv, ours, conv, ours, ...
        for name, layer in sides.items():
            times[name].append(time_pass(layer, x, g, device))
    median = {name: statistics.median(ts) for name, ts in times.items()}
    peak = {name: peak_bytes(name, spec, batch, device) for name in sides}
    return {
        "layer": spec.name,
        "spec": asdict(spec),
        "batch": batch,
        "bias": bias,
        "output_hw": list(out.shape[2:]),
        "max_abs_diff": max_diff,
        "time_ms": {name: median[name] * 1e3 for name in sides},
        "time_ms_all": {name: [t * 1e3 for t in ts] for name, ts in times.items()},
        "time_ratio": median["ours"] / median["conv"],
        "saved_bytes": saved,
        "saved_ratio": saved["ours"] / saved["conv"],
        "peak_bytes": peak,
        "peak_ratio": peak["ours"] / max(peak["conv"], 1),
        "input_bytes": x.nbytes,
        "im2col_bytes": batch * spec.c_in * spec.kernel**2 * l_out * x.element_size(),
    }


def markdown(results: list[dict[str, Any]], machine: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"UnfoldConv2d vs nn.Conv2d, forward + backward, batch {args.batch}, float32, median of {args.repeats} "
        f"({machine['cpu']}, {machine['threads']} thread(s), {machine['device']}, torch {machine['torch']}, "
        f"{machine['date']})",
        "",
        "| layer | nn.Conv2d ms | ours ms | time ratio | nn.Conv2d saved MiB | ours saved MiB | saved ratio "
        "| im2col MiB (transient) | nn.Conv2d peak MiB | ours peak MiB | peak ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        t, s = r["time_ms"], r["saved_bytes"]
        first = "" if r["spec"]["input_grad"] else " (no input grad)"
        lines.append(f"| {r['layer']}{first} | {t['conv']:.1f} | {t['ours']:.1f} | {r['time_ratio']:.2f}x "
                     f"| {s['conv'] / MiB:.2f} | {s['ours'] / MiB:.2f} | {r['saved_ratio']:.2f}x "
                     f"| {r['im2col_bytes'] / MiB:.1f} | {r['peak_bytes']['conv'] / MiB:.1f} "
                     f"| {r['peak_bytes']['ours'] / MiB:.1f} | {r['peak_ratio']:.2f}x |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--repeats", type=int, default=10, help="timed forward+backward passes per side (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed passes per side first")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help=f"torch.set_num_threads (default {torch.get_num_threads()}, torch's default here)")
    p.add_argument("--bias", action="store_true", help="layers with a bias (default: without, as in the lab's CNNs)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON result (default {DEFAULT_OUT})")
    p.add_argument("--quick", action="store_true", help="smoke test: batch 16, 3 repeats, 1 warm-up")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.repeats, args.warmup = 16, 3, 1
    if min(args.batch, args.repeats, args.threads) < 1 or args.warmup < 0:
        p.error("--batch, --repeats and --threads must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    machine = machine_info(args.threads, device)
    results = []
    for spec in LAYERS:
        results.append(bench_layer(spec, args.batch, args.bias, args.warmup, args.repeats, device))
        print(f"  {spec.name}: {results[-1]['time_ratio']:.2f}x time, {results[-1]['saved_ratio']:.2f}x saved",
              file=sys.stderr)
    table = markdown(results, machine, args)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "settings": settings, "results": results,
                                    "markdown": table}, indent=2) + "\n")
    print(table)
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
