"""Benchmark: every `dla.explain` method that captum or pytorch-grad-cam also has, maps per second, same run.

Both sides explain the same batch with the same model, the registry CNN (depth 9, width 16, on 1 x 28 x 28 images,
10 classes, eval mode, random weights: speed does not depend on training), at the same layer for the CAMs
(`stages.3.0.conv2`, the last conv module), and return the same display maps (B, 28, 28) in [0, 1]:

| ours | captum 0.9.0 | pytorch-grad-cam 1.5.7 |
|---|---|---|
| saliency | `Saliency(abs=True)`, max over channels | |
| integrated_gradients (32 steps, black) | `IntegratedGradients(n_steps=32, method="gausslegendre")`, channel sum | |
| smoothgrad (25 samples, noise 0.15) | `NoiseTunnel(Saliency)`, `nt_type="smoothgrad"`, same samples and stdev | |
| gradcam | `LayerGradCam` + `LayerAttribution.interpolate` | `GradCAM` |
| gradcam++, layercam, scorecam | | `GradCAMPlusPlus`, `LayerCAM`, `ScoreCAM` |

captum's maps get the ReLU (where ours has one), the bilinear upsampling and the same per-sample min-max inside
the timed call (a few microseconds); pytorch-grad-cam returns display maps itself (ReLU, min-max, cv2.resize), as
numpy, and is timed as called. Each side runs with its own defaults for batching (ours: Integrated Gradients 8
steps per pass, Score-CAM 64 masked images per pass; captum: all steps / samples in one pass; pytorch-grad-cam:
Score-CAM 16 per pass).

Target "predicted": ours and pytorch-grad-cam are given no target (both take the argmax of their own forward pass);
captum needs one, so `model(x).argmax(1)` under no_grad runs inside its timed call. "given": both get the same
(B,) classes (gradcam and saliency only, as before). Before timing, each pair is checked to give the same maps
(1e-4; SmoothGrad on the same noise, injected into captum's `torch.normal` for that check only). Then `--warmup`
untimed calls per side and `--repeats` timed ones interleaved (ours, peer, ours, ...). A call's time is the CPU
time of this process (`time.process_time`; run it with one thread, where that is the work done): on a machine
shared with other jobs, wall time would mostly measure them. We report the median, maps per second (batch /
median) and ours / peer (> 1: ours faster). `--wall` times wall-clock instead, for a quiet machine.

pytorch-grad-cam imports opencv, ttach and torchvision at the top of its package. This project installs none of
them; the CAM path needs opencv (`cv2.resize`) and ttach (imported by BaseCAM) but no torchvision function, so
install the first two beside the venv and, where torchvision is absent, the benchmark registers a stub for the
names pytorch-grad-cam imports from it (any call raises):

    pip install --no-deps --target /tmp/gradcam-deps ttach opencv-python-headless
    PYTHONPATH=src:/tmp/gradcam-deps python benchmarks/explain_speed.py --threads 1
    python benchmarks/explain_speed.py --quick --out /tmp/es.json   # smoke test; skips a peer not importable
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import captum
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel
from captum.attr import Saliency as CaptumSaliency
from torch import nn

from dla.explain import explain
from dla.explain.base import normalise
from dla.explain.smoothgrad import SmoothGrad
from dla.models import ModelInputs, build_model
from dla.models.cnn import CNNConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, save_result

DEFAULT_OUT = Path(__file__).resolve().parent / "results_explain_speed.json"
INPUTS = ModelInputs((1, 28, 28), 10, (0.286,), (0.353,))
LAYER = "stages.3.0.conv2"  # the last conv module, a fixed layer every side attributes to
SAMPLES, NOISE, STEPS = 25, 0.15, 32
# (method, peer, target setting); the costly methods run on a smaller batch (--slow-batch)
PAIRS = [("saliency", "captum", "predicted"), ("saliency", "captum", "given"),
         ("integrated_gradients", "captum", "predicted"), ("smoothgrad", "captum", "predicted"),
         ("gradcam", "captum", "predicted"), ("gradcam", "captum", "given"),
         ("gradcam", "pytorch-grad-cam", "predicted"), ("gradcam++", "pytorch-grad-cam", "predicted"),
         ("layercam", "pytorch-grad-cam", "predicted"), ("scorecam", "pytorch-grad-cam", "predicted")]
SLOW = {"integrated_gradients", "smoothgrad", "scorecam"}
GRAD_CAM_CLASSES = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "layercam": "LayerCAM",
                    "scorecam": "ScoreCAM"}

warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")  # captum Saliency


def model_and_batch(batch: int) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(CNNConfig(depth=9, width=16), INPUTS).eval()
    x = torch.rand(batch, *INPUTS.input_shape, generator=torch.Generator().manual_seed(1))
    return model, x


def predicted(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


def import_pytorch_grad_cam() -> types.ModuleType | None:
    """pytorch_grad_cam, with a stub for the torchvision names it imports if torchvision is absent; None if it
    still cannot be imported (opencv or ttach missing)."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        def absent(*_: Any, **__: Any) -> Any:
            raise RuntimeError("torchvision is not installed: this stub only satisfies pytorch-grad-cam's imports")

        tv, tr = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
        fn, ops = types.ModuleType("torchvision.transforms.functional"), types.ModuleType("torchvision.ops")
        tr.Compose = tr.Normalize = tr.ToTensor = fn.resize = ops.box_iou = absent  # type: ignore[attr-defined]
        tv.transforms, tv.ops, tr.functional = tr, ops, fn  # type: ignore[attr-defined]
        sys.modules.update({"torchvision": tv, "torchvision.transforms": tr, "torchvision.transforms.functional": fn,
                            "torchvision.ops": ops})
    try:
        import pytorch_grad_cam
    except ImportError as e:
        print(f"  pytorch-grad-cam not importable ({e}); its pairs are skipped", file=sys.stderr)
        return None
    return pytorch_grad_cam


def captum_side(model: nn.Module, x: torch.Tensor, method: str, given: torch.Tensor | None
                ) -> Callable[[], torch.Tensor]:
    def target() -> torch.Tensor:
        return given if given is not None else predicted(model, x)

    if method == "gradcam":
        gc = LayerGradCam(model, dict(model.named_modules())[LAYER])
        return lambda: normalise(LayerAttribution.interpolate(
            gc.attribute(x, target=target(), relu_attributions=True), x.shape[-2:], "bilinear").squeeze(1))
    if method == "saliency":
        sal = CaptumSaliency(model)
        return lambda: normalise(sal.attribute(x, target=target(), abs=True).amax(dim=1))
    if method == "integrated_gradients":
        ig = IntegratedGradients(model)
        return lambda: normalise(ig.attribute(x, baselines=0.0, target=target(), n_steps=STEPS,
                                              method="gausslegendre").sum(dim=1).clamp_min(0))
    tunnel = NoiseTunnel(CaptumSaliency(model))
    return lambda: normalise(tunnel.attribute(x, target=target(), abs=True, nt_type="smoothgrad",
                                              nt_samples=SAMPLES, stdevs=NOISE).amax(dim=1))


def grad_cam_side(model: nn.Module, x: torch.Tensor, method: str, gc: types.ModuleType
                  ) -> Callable[[], torch.Tensor]:
    cam = getattr(gc, GRAD_CAM_CLASSES[method])(model, [dict(model.named_modules())[LAYER]])
    return lambda: torch.from_numpy(cam(input_tensor=x, targets=None))


def sides(model: nn.Module, x: torch.Tensor, method: str, peer: str, setting: str, gc: types.ModuleType | None
          ) -> dict[str, Callable[[], torch.Tensor]]:
    """The two calls to time, each returning display maps (B, H, W)."""
    given = (predicted(model, x) + 1) % 10 if setting == "given" else None  # not the prediction: a real choice
    options = {"layer": LAYER} if method in GRAD_CAM_CLASSES else {}
    options |= {"samples": SAMPLES, "noise": NOISE} if method == "smoothgrad" else {}
    options |= {"steps": STEPS} if method == "integrated_gradients" else {}
    theirs = captum_side(model, x, method, given) if peer == "captum" else grad_cam_side(model, x, method, gc)
    return {"ours": lambda: explain(model, x, method, given, **options), peer: theirs}


@contextlib.contextmanager
def same_noise(model: nn.Module, x: torch.Tensor) -> Iterator[None]:
    """captum's NoiseTunnel draws torch.normal(0, stdev) on the (B * S, C, H, W) stack; answer it with our draws
    (row b * S + s holds draw s) so that the two SmoothGrads can be compared for equality."""
    draws = SmoothGrad(model, SAMPLES, NOISE).noise_draws(x).repeat(x.shape[0], 1, 1, 1)
    normal = torch.normal
    torch.normal = lambda mean, std: mean + std * draws  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.normal = normal


def check_equal(fns: dict[str, Callable[[], torch.Tensor]], model: nn.Module, x: torch.Tensor, method: str
                ) -> float:
    a = fns["ours"]()
    with same_noise(model, x) if method == "smoothgrad" else contextlib.nullcontext():
        b = next(fn for name, fn in fns.items() if name != "ours")()
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    return (a - b).abs().max().item()


def bench(model: nn.Module, x: torch.Tensor, pair: tuple[str, str, str], warmup: int, repeats: int,
          gc: types.ModuleType | None, clock: Callable[[], float] = time.process_time) -> dict[str, Any]:
    method, peer, setting = pair
    fns = sides(model, x, method, peer, setting, gc)
    max_diff = check_equal(fns, model, x, method)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):  # interleaved: ours, peer, ours, peer, ...
        for name, fn in fns.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    mps = {name: len(x) / m for name, m in median.items()}
    return {"method": method, "peer": peer, "target": setting, "batch": len(x), "max_abs_diff": max_diff,
            "time_ms": {name: m * 1e3 for name, m in median.items()},
            "time_ms_all": {name: [t * 1e3 for t in ts] for name, ts in times.items()},
            "maps_per_s": mps, "ratio": mps["ours"] / mps[peer]}


def markdown(results: list[dict[str, Any]], machine: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"dla.explain vs captum {machine['captum']} and pytorch-grad-cam {machine.get('pytorch_grad_cam', '-')}, "
        f"registry CNN (depth 9, width 16, 1x28x28), float32, median {'wall' if args.wall else 'CPU'} time of "
        f"{args.repeats} interleaved calls "
        f"({machine['cpu']}, {machine['threads']} thread(s), torch {machine['torch']}, {machine['date']})",
        "",
        "| method | peer | target | batch | ours ms | peer ms | ours maps/s | peer maps/s | ours / peer |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        t, mps = r["time_ms"], r["maps_per_s"]
        lines.append(f"| {r['method']} | {r['peer']} | {r['target']} | {r['batch']} | {t['ours']:.1f} "
                     f"| {t[r['peer']]:.1f} | {mps['ours']:.1f} | {mps[r['peer']]:.1f} | {r['ratio']:.2f}x |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=64, help="images per call (default 64)")
    p.add_argument("--slow-batch", type=int, default=16,
                   help="images per call for integrated_gradients, smoothgrad and scorecam (default 16)")
    p.add_argument("--repeats", type=int, default=9, help="timed calls per side (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per side first")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help=f"torch.set_num_threads (default {torch.get_num_threads()}, torch's default here)")
    p.add_argument("--methods", default="all", help="comma list of methods to run (default: all)")
    p.add_argument("--wall", action="store_true", help="time wall-clock (perf_counter), not this process's CPU time")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON result (default {DEFAULT_OUT})")
    p.add_argument("--quick", action="store_true", help="smoke test: batches 8 and 2, 2 repeats, 1 warm-up")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.slow_batch, args.repeats, args.warmup = 8, 2, 2, 1
    if min(args.batch, args.slow_batch, args.repeats, args.threads) < 1 or args.warmup < 0:
        p.error("--batch, --slow-batch, --repeats and --threads must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    gc = import_pytorch_grad_cam()
    versions = {"captum": captum.__version__} | ({"pytorch_grad_cam": "1.5.7"} if gc is not None else {})
    machine = machine_info(args.threads, torch.device("cpu"), **versions)
    wanted = None if args.methods == "all" else set(args.methods.split(","))
    results = []
    for pair in PAIRS:
        if (pair[1] == "pytorch-grad-cam" and gc is None) or (wanted is not None and pair[0] not in wanted):
            continue
        model, x = model_and_batch(args.slow_batch if pair[0] in SLOW else args.batch)
        clock = time.perf_counter if args.wall else time.process_time
        results.append(bench(model, x, pair, args.warmup, args.repeats, gc, clock))
        print(f"  {pair[0]} vs {pair[1]}, {pair[2]} target: ours / peer {results[-1]['ratio']:.2f}x", file=sys.stderr)
    table = markdown(results, machine, args)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    save_result(args.out, {"machine": machine, "settings": settings, "results": results, "markdown": table}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
