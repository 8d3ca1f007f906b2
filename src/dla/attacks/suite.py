"""AutoAttack's ensemble: several attacks in turn, each on the images the previous ones left robust, worst case.

AutoAttack's "standard" version (Croce & Hein, 2020; RobustBench's evaluation) runs APGD-CE, APGD-T, FAB-T and
Square in that order, each only on the images still robust after the attacks before it, and counts an image as
robust at eps only if it is classified correctly clean and survives all of them (the worst case per example).
`--suite autoattack` is that ensemble (with each attack's standard settings unless `options` change them:
100 steps, 9 target classes, 5000 Square queries); `--suite autoattack-fast` is its cheaper part, APGD-CE +
APGD-T, whose worst case is an upper bound on what the full ensemble would report. Each attack's column is the
robust accuracy after it and every attack before it, as AutoAttack reports it; the last equals the worst case.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from dla.attacks.common import AttackError, attack_mode, check_eps, logits_of
from dla.attacks.evaluate import Batch, _batches, _model_device_dtype
from dla.attacks.registry import get_attack

SUITES: dict[str, tuple[str, ...]] = {"autoattack": ("apgd-ce", "apgd-t", "fab-t", "square"),
                                      "autoattack-fast": ("apgd-ce", "apgd-t")}
MISSING: dict[str, str] = {"autoattack-fast": "FAB-T and Square"}  # of the standard ensemble, not run
Row = dict[str, Any]


def suite_attacks(suite: str) -> tuple[str, ...]:
    if suite not in SUITES:
        raise AttackError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
    return SUITES[suite]


def caption(suite: str) -> str:
    """What the suite ran, for a table's caption: its attacks in order and those of the standard ensemble it lacks."""
    names = " → ".join(a.upper() for a in suite_attacks(suite))
    if suite in MISSING:
        return (f"{suite}: {names}, a subset of AutoAttack's standard ensemble ({MISSING[suite]} not run: an upper "
                f"bound on its worst case); each attack on the images the previous left robust, each column the "
                f"robust accuracy after it and those before it")
    return (f"{suite}: AutoAttack's standard ensemble, {names}, each attack on the images the previous left "
            f"robust, each column the robust accuracy after it and those before it")


def _robust(model: nn.Module, name: str, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int,
            options: dict[str, Any]) -> torch.Tensor:
    """(b,) bool: still classified as y after `name` at eps (b images, all classified correctly clean)."""
    if eps == 0 or x.shape[0] == 0:
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    torch.manual_seed(seed)  # attacks that draw from the global RNG; the APGDs take the seed themselves
    x_adv = get_attack(name)(model, x, y, eps, **options)
    with torch.no_grad():
        return logits_of(model, x_adv).argmax(dim=1) == y


def evaluate_suite(model: nn.Module, data: Iterable[Batch] | Batch, attacks: Sequence[str], eps_list: Sequence[float],
                   *, batch_size: int = 256, seed: int = 0,
                   options: dict[str, dict[str, Any]] | None = None) -> list[Row]:
    """Per eps: {"eps", "n", "clean", "worst", "attacks": {name: robust accuracy}} over the whole dataset.

    `data` as in `evaluate_attack` (uint8 or [0, 1] images); `options[name]` are that attack's options (e.g.
    {"apgd-ce": {"steps": 20}}); attacks that take a `seed` get `seed` unless given one. The attacks run in
    order, each on the images of the batch classified correctly clean and not broken by the attacks before it;
    attacks["name"] is the fraction robust after that attack and every earlier one, "worst" after all of them.
    """
    eps_list = [check_eps(e) for e in eps_list]
    options = {a: dict((options or {}).get(a, {})) for a in attacks}
    for a in attacks:
        spec = get_attack(a)
        if "seed" in spec.options():
            options[a].setdefault("seed", seed)
        spec.check_options(options[a])
    device, dtype = _model_device_dtype(model)
    n, clean = 0, 0
    counts = [{a: 0 for a in (*attacks, "worst")} for _ in eps_list]
    with attack_mode(model):
        for x, y in _batches(data, batch_size):
            x = x.to(device)
            x = x.to(dtype).div_(255) if not x.is_floating_point() else x.to(dtype)
            y = y.to(device=device, dtype=torch.long)
            with torch.no_grad():
                ok = logits_of(model, x).argmax(dim=1) == y  # (b,)
            n, clean = n + y.shape[0], clean + int(ok.sum())
            xc, yc = x[ok], y[ok]
            for i, eps in enumerate(eps_list):
                robust = torch.ones_like(yc, dtype=torch.bool)
                for a in attacks:
                    idx = robust.nonzero()[:, 0]
                    robust[idx] = _robust(model, a, xc[idx], yc[idx], eps, seed, options[a])
                    counts[i][a] += int(robust.sum())
                counts[i]["worst"] += int(robust.sum())
    if n == 0:
        raise AttackError("no examples to attack: the data yielded no batches")
    return [{"eps": eps, "n": n, "clean": clean / n, "worst": c["worst"] / n,
             "attacks": {a: c[a] / n for a in attacks}} for eps, c in zip(eps_list, counts, strict=True)]
