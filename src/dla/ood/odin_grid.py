"""ODIN's two hyperparameters, chosen on validation data: AUROC over a temperature x eps grid, best cell wins.

Liang et al. (2018) tune the temperature T and the input step eps of ODIN on held-out data. `odin_grid` scores an
ID and an OOD *validation* set at every (T, eps) of the grid and picks the cell with the highest validation AUROC
(ties: the smallest T, then the smallest eps, i.e. the first in row-major order). It never sees test data; the
caller (`dla ood --odin-grid`) then reports the chosen point on the test pair, next to the default ODIN row.

Cost: per image chunk, one forward pass gives the eps = 0 column at every T (a softmax of the same logits) and
keeps its graph; per temperature, one backward pass through it gives ODIN's step direction,
sign(grad_x log MSP_T(x)), shared by every eps; then one forward pass per eps > 0. That is nT backward passes
and 1 + nT x nE+ forward passes per chunk, against nT x nE+ backward and 2 nT x nE+ + nT forward passes for one
ODIN call per cell.

The (T = 1, eps = 0) cell is the maximum softmax probability computed exactly as `score(..., "msp")` does (same
chunks, same operations), so its AUROC equals MSP's bit for bit.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dla.nn.modes import eval_frozen
from dla.ood.metrics import OODError
from dla.ood.metrics import metrics as ood_metrics
from dla.ood.scores import _logits
from dla.runtime import eval_batch_size

TEMPERATURES: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
EPS: tuple[float, ...] = (0, 0.5 / 255, 1 / 255, 2 / 255, 3 / 255, 4 / 255, 5 / 255)  # pixel units, 0 .. 5/255
KEYS = ("auroc", "aupr_in", "aupr_out", "fpr95")


@dataclass
class OdinGrid:
    temperatures: list[float]
    eps: list[float]
    metrics: dict[str, np.ndarray]  # key in KEYS -> (nT, nE) validation metric at each cell
    n_id: int
    n_ood: int

    @property
    def chosen(self) -> tuple[int, int]:
        """(i, j): the cell of highest validation AUROC, the first one in row-major order on a tie."""
        flat = int(np.argmax(self.metrics["auroc"]))  # argmax returns the first maximum
        return divmod(flat, len(self.eps))

    @property
    def chosen_temperature(self) -> float:
        return self.temperatures[self.chosen[0]]

    @property
    def chosen_eps(self) -> float:
        return self.eps[self.chosen[1]]

    def to_json(self) -> dict[str, Any]:
        i, j = self.chosen
        return {"temperatures": self.temperatures, "eps": self.eps, "n_id": self.n_id, "n_ood": self.n_ood,
                **{k: self.metrics[k].tolist() for k in KEYS},
                "chosen": {"temperature": self.chosen_temperature, "eps": self.chosen_eps,
                           **{f"val_{k}": float(self.metrics[k][i, j]) for k in KEYS}}}

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["temperature", "eps", "eps_255", *KEYS, "chosen"])
        for i, t in enumerate(self.temperatures):
            for j, e in enumerate(self.eps):
                w.writerow([f"{t:g}", f"{e:.8g}", f"{e * 255:.4g}", *(f"{self.metrics[k][i, j]:.6f}" for k in KEYS),
                            int((i, j) == self.chosen)])
        return buf.getvalue()


def eps_label(eps: float) -> str:
    """0.00784 -> '2/255': eps in grey levels when it is (close to) a multiple of 0.5/255, else the number."""
    levels = eps * 255
    return f"{levels:g}/255" if abs(levels * 2 - round(levels * 2)) < 1e-6 and eps else f"{eps:.4g}"


def parse_values(text: str | Sequence[float], option: str, *, minimum: float, strict: bool) -> list[float]:
    """'0,0.5/255,1/255' (numbers or fractions a/b) -> floats, each > minimum (strict) or >= minimum; one error."""
    words = [w.strip() for w in text.split(",")] if isinstance(text, str) else list(text)
    if not words or words == [""]:
        raise OODError(f"{option} is empty; give a comma list such as "
                       + ("1,10,100,1000" if strict else "0,1/255,2/255"))
    out: list[float] = []
    for w in words:
        try:
            if isinstance(w, str) and "/" in w:
                a, b = w.split("/")
                v = float(a) / float(b)
            else:
                v = float(w)
        except (ValueError, ZeroDivisionError):
            raise OODError(f"{option}: {w!r} is not a number (use values like 2 or 2/255)") from None
        if not math.isfinite(v) or (v <= minimum if strict else v < minimum):
            raise OODError(f"{option}: {w!r} must be {'>' if strict else '>='} {minimum:g}")
        out.append(v)
    if len(set(out)) != len(out):
        raise OODError(f"{option} lists a value twice: {text!r}")
    return out


def grid_scores(model: nn.Module, x: torch.Tensor, temperatures: Sequence[float], eps: Sequence[float], *,
                batch_size: int | None = None, tick: Any = None) -> np.ndarray:
    """ODIN scores of float images x (N, C, H, W) in [0, 1] at every (T, eps): float64 (nT, nE, N).

    `tick()` is called once per (chunk, temperature), for a progress bar. `batch_size`: images per chunk
    (default: `dla.runtime.eval_batch_size`); it changes no score beyond float rounding.
    """
    batch_size = batch_size or eval_batch_size(x.device)
    nt, ne, n = len(temperatures), len(eps), x.shape[0]
    out = np.empty((nt, ne, n))
    steps = [e for e in eps if e > 0]
    with eval_frozen(model):
        for lo in range(0, n, batch_size):
            chunk = x[lo: lo + batch_size].detach()  # (B, C, H, W)
            for i, (msp_t, d) in enumerate(_directions(model, chunk, temperatures, need_grad=bool(steps))):
                stepped = iter(_stepped_msp(model, chunk, d, steps, temperatures[i]))
                for j, e in enumerate(eps):
                    s = next(stepped) if e > 0 else msp_t
                    out[i, j, lo: lo + chunk.shape[0]] = s.to("cpu", torch.float64).numpy()
                if tick is not None:
                    tick()
    return out


def _directions(model: nn.Module, chunk: torch.Tensor, temperatures: Sequence[float], *, need_grad: bool
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Per temperature: (MSP_T of the clean chunk (B,), ODIN's step direction (B, C, H, W) or None).

    One forward pass serves every temperature: its logits give each eps = 0 cell (the same operations as
    `score(..., "msp")`, so T = 1 equals MSP bit for bit), and its graph is kept for one backward pass per
    temperature (ODIN's gradient at T differs only in the vector fed back through the same Jacobian).
    """
    with torch.set_grad_enabled(need_grad):
        x_req = chunk.clone().requires_grad_(need_grad)
        logits = _logits(model, x_req)  # (B, K)
    for i, t in enumerate(temperatures):
        msp_t = torch.softmax(logits.detach() / t, dim=1).amax(dim=1)
        if not need_grad:
            yield msp_t, None
            continue
        with torch.enable_grad():
            log_msp = torch.log_softmax(logits / t, dim=1).amax(dim=1)
            # Eval mode keeps samples independent, so the gradient of the sum is each sample's own gradient.
            (grad,) = torch.autograd.grad(log_msp.sum(), x_req, retain_graph=i < len(temperatures) - 1)
        yield msp_t, grad.sign()


def _stepped_msp(model: nn.Module, chunk: torch.Tensor, d: torch.Tensor | None, steps: Sequence[float],
                 t: float) -> list[torch.Tensor]:
    """MSP_T (B,) of the chunk stepped by each eps > 0 along d, one forward pass per eps at the chunk's size.

    (Not all the eps copies in one batch: at nE+ times the batch, a CPU forward pass costs more than nE+ times
    as much, its activations falling out of cache.)
    """
    with torch.inference_mode():  # a list, not a generator: the mode must not outlive this call
        return [torch.softmax(_logits(model, (chunk + e * d).clamp_(0.0, 1.0)) / t, dim=1).amax(dim=1)
                for e in steps]


def odin_grid(model: nn.Module, id_x: torch.Tensor, ood_x: torch.Tensor,
              temperatures: Sequence[float] = TEMPERATURES, eps: Sequence[float] = EPS, *,
              batch_size: int | None = None, progress_desc: str = "") -> OdinGrid:
    """Validation metrics of ODIN at every (T, eps): ID and OOD float images (N, C, H, W) in [0, 1].

    Pass validation data only: the chosen cell (`OdinGrid.chosen`) is a function of these two sets alone.
    """
    from dla.tracking import progress

    temperatures = parse_values(list(temperatures), "ODIN temperatures", minimum=0, strict=True)
    eps = parse_values(list(eps), "ODIN eps values", minimum=0, strict=False)
    if len(id_x) == 0 or len(ood_x) == 0:
        raise OODError("the ODIN grid needs at least one ID and one OOD validation image")
    batch_size = batch_size or eval_batch_size(id_x.device)
    chunks = -(-len(id_x) // batch_size) + -(-len(ood_x) // batch_size)
    bar = iter(progress(range(chunks * len(temperatures)), total=chunks * len(temperatures),
                        desc=progress_desc or "ODIN grid"))

    def tick() -> None:
        next(bar, None)

    s_id = grid_scores(model, id_x, temperatures, eps, batch_size=batch_size, tick=tick)
    s_ood = grid_scores(model, ood_x, temperatures, eps, batch_size=batch_size, tick=tick)
    next(bar, None)  # close the bar
    table = {k: np.empty((len(temperatures), len(eps))) for k in KEYS}
    for i in range(len(temperatures)):
        for j in range(len(eps)):
            m = ood_metrics(s_id[i, j], s_ood[i, j])
            for k in KEYS:
                table[k][i, j] = m[k]
    return OdinGrid(list(temperatures), list(eps), table, len(id_x), len(ood_x))
