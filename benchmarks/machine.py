"""What every benchmark records next to its numbers: the CPU, threads, versions, device and date."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
from pathlib import Path
from typing import Any

import torch


def machine_info(threads: int, device: torch.device, **versions: str) -> dict[str, Any]:
    """The machine a result was measured on; `versions` adds peers' versions (e.g. captum="0.9.0")."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    info = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        **versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "device": str(device),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def save_result(out: Path, result: dict[str, Any], table: str = "") -> None:
    """Write a benchmark's result JSON (folders made), print its Markdown table, and say where it went."""
    import json

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if table:
        print()
        print(table)
    print(f"\nwritten to {out}")
