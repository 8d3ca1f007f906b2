"""Device choice and seeding."""

from __future__ import annotations

import contextlib
import random
import re

import numpy as np
import torch

from dla.errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """auto: cuda, then mps, then cpu. An explicit device that is not there is a user error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(name, str) or not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name):  # torch.device("tpu") raises
        raise ConfigError(f"device={name!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available here; use device=auto or device=cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name} but this machine has {torch.cuda.device_count()} CUDA device(s); "
                          "use cuda:0 .. cuda:N-1 or device=auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name} but MPS is not available here; use device=auto or device=cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), so bf16 matmuls beat fp32 ones."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(device: torch.device, amp: bool, amp_cpu: bool = False) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (`train.amp`), and on CPUs with native bf16 when `train.amp_cpu` asks for it."""
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and amp_cpu and cpu_has_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def eval_batch_size(where: torch.device | str | torch.nn.Module) -> int:
    """Images per forward pass in evaluation code that chunks its input (OOD scores, features, the ODIN grid).

    On a CPU small chunks are faster per image: the activations of 32 images of a 32 x 32 conv net stay in a
    core's L2 cache, those of 500 do not (the 9-layer CIFAR-10 CNN, one thread of a Xeon: 760 images/s at 32
    to 50 images per pass, 400 at 500; BENCHMARKS.md). 32 per thread keeps each thread's share that small.
    A GPU wants large batches. Chunking changes no score beyond float rounding (tests/ood/test_scores.py).
    `where`: a device, or a model (its parameters' device; a model without parameters counts as on the CPU).
    """
    if isinstance(where, torch.nn.Module):
        p = next(where.parameters(), None)
        where = p.device if p is not None else "cpu"
    if torch.device(where).type != "cpu":
        return 1024
    return 32 * max(1, torch.get_num_threads())
