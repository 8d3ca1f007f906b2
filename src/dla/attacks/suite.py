"""An AutoAttack-style ensemble: several attacks on the same images, robust accuracy per attack and worst case.

AutoAttack's "standard" ensemble (Croce & Hein, 2020; RobustBench's evaluation) is APGD-CE, APGD-T, FAB-T and
Square. `dla` has the first two, so the "autoattack" suite here is APGD-CE + APGD-T (100 steps each, 9 target
classes, as in the standard version), without FAB-T and Square: its worst case is an upper bound on what the
full ensemble would report. An image counts as robust at eps only if it is classified correctly clean and
after every attack of the suite (the worst case per example); each attack's own robust accuracy is reported too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from dla.attacks.common import AttackError, attack_mode, check_eps, logits_of
from dla.attacks.evaluate import Batch, _batches, _model_device_dtype
from dla.attacks.registry import get_attack

SUITES: dict[str, tuple[str, ...]] = {"autoattack": ("apgd-ce", "apgd-t")}
MISSING: dict[str, str] = {"autoattack": "FAB-T and Square"}  # of the standard ensemble, not in dla
Row = dict[str, Any]


def suite_attacks(suite: str) -> tuple[str, ...]:
    if suite not in SUITES:
        raise AttackError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
    return SUITES[suite]


def caption(suite: str) -> str:
    """What the suite is, for a table's caption: the attacks it runs and those of the standard ensemble it lacks."""
    names = " + ".join(a.upper() for a in suite_attacks(suite))
    missing = f"; the standard AutoAttack ensemble's {MISSING[suite]} are not run" if suite in MISSING else ""
    return f"{suite} subset: {names}{missing}"


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
    {"apgd-ce": {"steps": 20}}); attacks that take a `seed` get `seed` unless given one. Each attack runs on
    the images classified correctly clean, so its robust accuracy is its own; "worst" is the fraction robust
    to all of them at once.
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
                worst = torch.ones_like(yc, dtype=torch.bool)
                for a in attacks:
                    r = _robust(model, a, xc, yc, eps, seed, options[a])
                    counts[i][a] += int(r.sum())
                    worst &= r
                counts[i]["worst"] += int(worst.sum())
    if n == 0:
        raise AttackError("no examples to attack: the data yielded no batches")
    return [{"eps": eps, "n": n, "clean": clean / n, "worst": c["worst"] / n,
             "attacks": {a: c[a] / n for a in attacks}} for eps, c in zip(eps_list, counts, strict=True)]
