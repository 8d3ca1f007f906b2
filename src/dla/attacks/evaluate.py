"""Robust accuracy: a registered attack at several eps over a dataset, with the metrics of the seeds' tables.

This is what `dla attack` and its table call: one row per eps, eps = 0 being the clean numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dla.attacks.common import AttackError, attack_mode, check_eps, least_likely_target, logits_of, step_along
from dla.attacks.registry import get_attack
from dla.train.metrics import MetricAccumulator

Batch = tuple[torch.Tensor, torch.Tensor]


def _is_tensor_pair(data: object) -> bool:
    return (
        isinstance(data, tuple | list)
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
        and data[0].ndim >= 2
        and data[1].ndim == 1
        and data[0].shape[0] == data[1].shape[0]
    )


def _batches(data: Iterable[Batch] | Batch, batch_size: int) -> Iterator[Batch]:
    if _is_tensor_pair(data):
        x, y = data
        for i in range(0, x.shape[0], batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
    else:
        for batch in data:
            if not (isinstance(batch, tuple | list) and len(batch) >= 2):
                raise AttackError(f"each batch must be (x, y); got {type(batch).__name__}")
            yield batch[0], batch[1]


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
    return device, dtype


def evaluate_attack(
    model: nn.Module,
    data: Iterable[Batch] | Batch,
    attack: str,
    eps_list: Sequence[float],
    *,
    batch_size: int = 256,
    **kw: object,
) -> list[dict[str, float | int | str | bool]]:
    """Per eps: loss, accuracy, macro precision / recall / F1 (and top-5 above 10 classes) on adversarial inputs.

    `data` is a DataLoader-like iterable of (x, y) batches, or one (x, y) pair of tensors split into `batch_size`
    chunks. Images may be uint8 (divided by 255, as the training loop does) or floating in [0, 1]; batches are moved
    to the model's device. `attack` is a registered name (`attack_names()`); `**kw` are its options, e.g.
    `steps=20, restarts=5` for "pgd", or `targeted=True, target=3` (an int, or an (N,) tensor over the whole
    dataset in batch order). The data are read once: each batch is attacked at every eps in turn.

    Rows: {"attack", "eps", "n", "loss", "accuracy", "precision", "recall", "f1", ["top5"], "targeted"} where loss
    is the mean cross-entropy with the true labels; targeted attacks (`targeted=True` or `least_likely=True`) add
    "success_rate": the fraction classified as their target, over the examples whose true label is not the target
    (an example already of the target class cannot be moved to it).
    """
    spec = get_attack(attack)
    spec.check_options(kw)
    eps_list = [check_eps(e) for e in eps_list]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AttackError(f"batch_size must be a positive integer; got {batch_size!r}")
    kw = dict(kw)
    least_likely = bool(kw.pop("least_likely", False))
    target_all = kw.pop("target", None)
    targeted = bool(kw.get("targeted", False)) or least_likely
    if targeted and target_all is None and not least_likely:
        raise AttackError("targeted=True needs target= (an int class or an (N,) tensor), or least_likely=True")
    device, dtype = _model_device_dtype(model)

    accs: list[MetricAccumulator] = []
    # Counted on the device and read once at the end: a per-batch int() would stall a GPU's queue every batch.
    hits = torch.zeros(len(eps_list), dtype=torch.long, device=device)
    eligible = torch.zeros((), dtype=torch.long, device=device)
    offset = 0
    with attack_mode(model):
        for x, y in _batches(data, batch_size):
            x = x.to(device)
            x = x.to(dtype).div_(255) if not x.is_floating_point() else x.to(dtype)
            y = y.to(device=device, dtype=torch.long)
            b = y.shape[0]
            # This batch's target: a shared int, this batch's slice of a dataset-wide tensor, or least-likely
            # (resolved here, so that the success rate knows it; the attack then runs it as a targeted attack).
            target = target_all
            if isinstance(target_all, torch.Tensor) and target_all.ndim == 1:
                target = target_all[offset : offset + b]
                if target.shape[0] != b:
                    have = target_all.shape[0]
                    raise AttackError(f"target has {have} labels but the data has at least {offset + b} examples")
            if least_likely:
                target, kw["targeted"] = least_likely_target(model, x), True
            offset += b
            if targeted:
                t = torch.full_like(y, target) if isinstance(target, int) else target.to(device)
                mask = t != y  # (b,)
                eligible += mask.sum()
            extra = {"target": target} if target is not None else {}
            # One gradient for every eps where the attack's step is linear in eps (FGSM): the same x_adv, bit for bit.
            direction = spec.direction(model, x, y, **kw, **extra) if spec.direction else None
            for i, eps in enumerate(eps_list):
                if direction is not None:
                    x_adv = step_along(x, direction, eps)
                else:
                    x_adv = spec(model, x, y, eps, **kw, **extra)
                with torch.inference_mode():  # the scoring pass: no graph, no version counters
                    z = logits_of(model, x_adv)  # (b, K)
                    if not accs:
                        accs = [MetricAccumulator(z.shape[1]) for _ in eps_list]
                    accs[i].update(F.cross_entropy(z, y), z, y)
                    if targeted:
                        hits[i] += ((z.argmax(1) == t) & mask).sum()
        if offset == 0:
            raise AttackError("no examples to attack: the data yielded no batches")
        if isinstance(target_all, torch.Tensor) and target_all.ndim == 1 and target_all.shape[0] != offset:
            raise AttackError(f"target has {target_all.shape[0]} labels but the data has {offset} examples")

    rows: list[dict[str, float | int | str | bool]] = []
    n_eligible = int(eligible)  # the counts come back to the host here, after the last batch
    for i, eps in enumerate(eps_list):
        row: dict[str, float | int | str | bool] = {"attack": attack, "eps": eps, "n": offset}
        row.update(accs[i].compute())
        row["targeted"] = targeted
        if targeted:
            row["success_rate"] = int(hits[i]) / n_eligible if n_eligible else 0.0
        rows.append(row)
    return rows
