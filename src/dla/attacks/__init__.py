"""Adversarial attacks on [0, 1] images (normalisation lives inside the model, so eps is in pixel units).

`fgsm` and `pgd` (L_inf) untargeted, targeted ("standard", one-vs-one "ovo", one-vs-rest "ovr") and least-likely;
registered by name only: "apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square" (L_inf) and "pgd-l2", "cw-l2",
"deepfool" (L2); a registry (`register_attack`, `attack_names`, `get_attack`) that enrols an attack in the CLI and
the test matrix; `evaluate_attack` for robust accuracy over a dataset at several eps. `dla attack RUN_DIR |
SWEEP_DIR` (tables, plots, image grids, mean ± std over a sweep's seeds) lives in `dla.attacks.run`; `--suite
autoattack` (AutoAttack's APGD-CE, APGD-T, FAB-T, Square in turn; `autoattack-fast` the first two; worst case per
example, gradient-masking checks) in `dla.attacks.suite`, `.masking` and `.suite_run`.
"""

from dla.attacks.common import VARIANTS, AttackError, attack_mode, least_likely_target
from dla.attacks.evaluate import evaluate_attack
from dla.attacks.fgsm import fgsm
from dla.attacks.pgd import pgd
from dla.attacks.registry import AttackSpec, attack_names, get_attack, register_attack

__all__ = [
    "VARIANTS",
    "AttackError",
    "AttackSpec",
    "attack_mode",
    "attack_names",
    "evaluate_attack",
    "fgsm",
    "get_attack",
    "least_likely_target",
    "pgd",
    "register_attack",
]
