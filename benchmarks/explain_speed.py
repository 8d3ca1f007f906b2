"""Benchmark: `dla.explain.grad_cam` and `dla.explain.saliency` against captum's LayerGradCam and Saliency.

Both sides explain the same batch with the same model, the registry CNN (depth 9, width 16, on 1 x 28 x 28 images,
10 classes, eval mode, random weights: speed does not depend on training), and do the same work per call:

- gradcam: ours `grad_cam(model, x, target, layer="stages.3.0.conv2")` -> display maps (B, 28, 28); captum
  `LayerGradCam(model, layer).attribute(x, target, relu_attributions=True)`, then
  `LayerAttribution.interpolate(..., (28, 28), "bilinear")` and the same per-sample min-max (a few microseconds);
- saliency: ours `saliency(model, x, target)`; captum `Saliency(model).attribute(x, target, abs=True)`, the max
  over channels and the same min-max.

Two target settings: "predicted" (target=None for ours; captum is given `model(x).argmax(1)`, computed inside the
timed call under no_grad, as captum needs a target) and "given" (both get the same (B,) tensor of classes).
Before timing, each pair is checked to give the same maps (float32 tolerance). Then `--warmup` untimed calls per
side, and `--repeats` timed ones with the sides interleaved (ours, captum, ours, ...) so that a noisy shared machine
slows both alike; we report the median, images per second (batch / median) and the ratio ours / captum of
images per second (> 1: ours is faster). pytorch-grad-cam (PyPI `grad-cam`) is not compared: it imports opencv,
torchvision and ttach, which this project does not install.

Run from the repository root:

    python benchmarks/explain_speed.py --threads 1                  # writes benchmarks/results_explain_speed.json
    python benchmarks/explain_speed.py --quick --out /tmp/es.json   # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import captum
import torch
from captum.attr import LayerAttribution, LayerGradCam
from captum.attr import Saliency as CaptumSaliency
from torch import nn

from dla.explain import grad_cam, saliency
from dla.explain.base import normalise
from dla.models import ModelInputs, build_model
from dla.models.cnn import CNNConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info

DEFAULT_OUT = Path(__file__).resolve().parent / "results_explain_speed.json"
INPUTS = ModelInputs((1, 28, 28), 10, (0.286,), (0.353,))
LAYER = "stages.3.0.conv2"  # the last conv module, a fixed layer both sides attribute to

warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")  # captum Saliency


def model_and_batch(batch: int) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(CNNConfig(depth=9, width=16), INPUTS).eval()
    x = torch.rand(batch, *INPUTS.input_shape, generator=torch.Generator().manual_seed(1))
    return model, x


def predicted(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


def sides(model: nn.Module, x: torch.Tensor, method: str, setting: str
          ) -> dict[str, Callable[[], torch.Tensor]]:
    """The two calls to time, each returning display maps (B, H, W)."""
    given = (predicted(model, x) + 1) % 10 if setting == "given" else None  # not the prediction: a real choice
    layer = dict(model.named_modules())[LAYER]
    gc_captum, sal_captum = LayerGradCam(model, layer), CaptumSaliency(model)

    def captum_target() -> torch.Tensor:
        return given if given is not None else predicted(model, x)

    if method == "gradcam":
        def ours() -> torch.Tensor:
            return grad_cam(model, x, given, LAYER)

        def theirs() -> torch.Tensor:
            up = LayerAttribution.interpolate(gc_captum.attribute(x, target=captum_target(), relu_attributions=True),
                                              x.shape[-2:], "bilinear")  # (B, 1, H, W)
            return normalise(up.squeeze(1))
    else:
        def ours() -> torch.Tensor:
            return saliency(model, x, given)

        def theirs() -> torch.Tensor:
            return normalise(sal_captum.attribute(x, target=captum_target(), abs=True).amax(dim=1))
    return {"ours": ours, "captum": theirs}


def timed(fn: Callable[[], torch.Tensor]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(model: nn.Module, x: torch.Tensor, method: str, setting: str, warmup: int, repeats: int
          ) -> dict[str, Any]:
    fns = sides(model, x, method, setting)
    a, b = fns["ours"](), fns["captum"]()
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    max_diff = (a - b).abs().max().item()
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):  # interleaved: ours, captum, ours, captum, ...
        for name, fn in fns.items():
            times[name].append(timed(fn))
    median = {name: statistics.median(ts) for name, ts in times.items()}
    ips = {name: len(x) / m for name, m in median.items()}
    return {
        "method": method,
        "target": setting,
        "batch": len(x),
        "max_abs_diff": max_diff,
        "time_ms": {name: m * 1e3 for name, m in median.items()},
        "time_ms_all": {name: [t * 1e3 for t in ts] for name, ts in times.items()},
        "images_per_s": ips,
        "ratio": ips["ours"] / ips["captum"],
    }


def markdown(results: list[dict[str, Any]], machine: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"dla.explain vs captum {machine['captum']}, registry CNN (depth 9, width 16, 1x28x28), batch {args.batch}, "
        f"float32, median of {args.repeats} interleaved calls ({machine['cpu']}, {machine['threads']} thread(s), "
        f"torch {machine['torch']}, {machine['date']})",
        "",
        "| method | target | ours ms | captum ms | ours img/s | captum img/s | ours / captum (img/s) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        t, ips = r["time_ms"], r["images_per_s"]
        name = "Grad-CAM (stages.3.0.conv2)" if r["method"] == "gradcam" else "saliency"
        lines.append(f"| {name} | {r['target']} | {t['ours']:.1f} | {t['captum']:.1f} | {ips['ours']:.0f} "
                     f"| {ips['captum']:.0f} | {r['ratio']:.2f}x |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=64, help="images per call (default 64)")
    p.add_argument("--repeats", type=int, default=15, help="timed calls per side (median)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per side first")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help=f"torch.set_num_threads (default {torch.get_num_threads()}, torch's default here)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON result (default {DEFAULT_OUT})")
    p.add_argument("--quick", action="store_true", help="smoke test: batch 8, 3 repeats, 1 warm-up")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.repeats, args.warmup = 8, 3, 1
    if min(args.batch, args.repeats, args.threads) < 1 or args.warmup < 0:
        p.error("--batch, --repeats and --threads must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = machine_info(args.threads, torch.device("cpu"), captum=captum.__version__)
    model, x = model_and_batch(args.batch)
    results = []
    for method in ("gradcam", "saliency"):
        for setting in ("predicted", "given"):
            results.append(bench(model, x, method, setting, args.warmup, args.repeats))
            print(f"  {method}, {setting} target: ours / captum {results[-1]['ratio']:.2f}x", file=sys.stderr)
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
