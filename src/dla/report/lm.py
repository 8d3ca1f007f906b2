"""Loss curves of a language model: train and val loss per step, with bits per token on the right axis."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from dla.report.plots import _series, save_figure


def plot_lm_curves(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for split, style in (("train", "-"), ("val", "--")):
        x, y = _series(rows, split, "loss")
        if x:
            ax.plot(x, y, style, marker="o", ms=3, label=f"{split} loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend()
    bits = ax.secondary_yaxis("right", functions=(lambda x: x / math.log(2), lambda b: b * math.log(2)))
    bits.set_ylabel("bits per token")
    ax.set_title(title)
    save_figure(fig, path)
