"""LoRA through PEFT: short target names (q, k, v, o, ffn, all-linear) mapped to the encoder's own Linear layers.

PEFT silently adapts nothing for a name that matches no module of a given architecture (a DistilBERT has no
`query`), which would train only the head and report it as LoRA; here every name must match at least one
Linear, or the run is refused. The trainable parameter count is then checked against the formula: a rank-r
adapter on Linear(d_in, d_out) adds A (r x d_in) and B (d_out x r), so r * (d_in + d_out) per adapted layer,
plus the classifier head.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

from torch import nn

from dla.errors import ConfigError

# Per short name, the last part(s) of module names that play that role in common encoders:
# BERT / RoBERTa / MiniLM (query, key, value, attention.output.dense, intermediate.dense, output.dense),
# DistilBERT (q_lin, ..., out_lin, ffn.lin1/lin2), and the q_proj / o_proj / fc1 spelling of newer models.
_ROLES: dict[str, tuple[str, ...]] = {
    "q": ("query", "q_lin", "q_proj"),
    "k": ("key", "k_lin", "k_proj"),
    "v": ("value", "v_lin", "v_proj"),
    "o": ("attention.output.dense", "out_lin", "o_proj", "out_proj"),
    "ffn": ("intermediate.dense", "output.dense", "ffn.lin1", "ffn.lin2", "fc1", "fc2", "up_proj", "down_proj",
            "gate_proj"),
}
ALL_LINEAR = "all-linear"


@dataclass
class LoraPlan:
    targets: list[str]  # the short names asked for
    modules: dict[str, nn.Linear]  # full module name -> the Linear it adapts
    r: int
    use_dora: bool = False  # DoRA (Liu et al. 2024): a learned magnitude per output feature on top of LoRA
    use_rslora: bool = False  # rank-stabilised scaling alpha / sqrt(r) instead of alpha / r: no new parameters
    saved: dict[str, nn.Module] = field(default_factory=dict)  # modules_to_save: trained whole (PEFT's copy)

    @property
    def adapter_parameters(self) -> int:
        """r * (d_in + d_out) per adapted Linear (A and B), + d_out with DoRA (its magnitude vector)."""
        return sum(self.r * (m.in_features + m.out_features) + (m.out_features if self.use_dora else 0)
                   for m in self.modules.values())

    @property
    def saved_parameters(self) -> int:
        return sum(p.numel() for m in self.saved.values() for p in m.parameters())


def parse_targets(text: str) -> list[str]:
    """'q+v' or 'q,v' -> ['q', 'v']."""
    names = [t.strip() for t in re.split(r"[+,]", text) if t.strip()]
    if not names:
        raise ConfigError(f"textcls.lora_targets = {text!r} names no module; use e.g. q+v, q+k+v or all-linear")
    return names


def _matches(name: str, role: str) -> bool:
    if role == "ffn" and name.endswith("attention.output.dense"):
        return False  # BERT's attention output is also an `output.dense`; it is `o`, not the FFN
    return any(name == s or name.endswith("." + s) for s in _ROLES[role])


def _pattern(name: str) -> str:
    return re.sub(r"\.\d+\.", ".*.", name)


def plan_lora(encoder: nn.Module, targets: str, r: int, *, use_dora: bool = False, use_rslora: bool = False,
              modules_to_save: str = "") -> LoraPlan:
    """The Linear layers each target name selects, and the modules trained whole; a name that selects nothing
    is refused."""
    plan = LoraPlan(targets=parse_targets(targets), modules=_adapted(encoder, targets), r=r, use_dora=use_dora,
                    use_rslora=use_rslora)
    plan.saved = _saved(encoder, modules_to_save, plan.modules)
    return plan


def _saved(encoder: nn.Module, modules_to_save: str, adapted: dict[str, nn.Linear]) -> dict[str, nn.Module]:
    """Full names of the modules `modules_to_save` names (each name: a module name or its last parts)."""
    names = [t.strip() for t in re.split(r"[+,]", modules_to_save) if t.strip()]
    modules = dict(encoder.named_modules())
    chosen: dict[str, nn.Module] = {}
    for t in names:
        hit = [n for n in modules if n and (n == t or n.endswith("." + t))]
        if not hit:
            raise ConfigError(f"textcls.modules_to_save: {t!r} names no module of this encoder; use a module name "
                              "such as embeddings.LayerNorm or output.LayerNorm")
        clash = [n for n in hit if any(a == n or a.startswith(n + ".") for a in adapted)]
        if clash:
            raise ConfigError(f"textcls.modules_to_save: {t!r} selects {clash[0]}, which holds a LoRA-adapted "
                              "layer; a module is either adapted or trained whole, not both")
        chosen.update({n: modules[n] for n in hit})
    # A module inside another chosen one is already trained with it: keep the outer one, count it once.
    return {n: m for n, m in sorted(chosen.items()) if not any(n.startswith(o + ".") for o in chosen)}


def _adapted(encoder: nn.Module, targets: str) -> dict[str, nn.Linear]:
    names = parse_targets(targets)
    linears = {n: m for n, m in encoder.named_modules() if isinstance(m, nn.Linear)}
    chosen: dict[str, nn.Linear] = {}
    for t in names:
        roles = list(_ROLES) if t == ALL_LINEAR else [t] if t in _ROLES else None
        if roles is not None:
            hit = [n for n in linears if any(_matches(n, role) for role in roles)]
        else:  # a module name (or its last parts) of this encoder, for architectures the table does not know
            hit = [n for n in linears if n == t or n.endswith("." + t)]
        if not hit:
            kinds = sorted({_pattern(n) for n in linears})
            raise ConfigError(f"textcls.lora_targets: {t!r} matches no Linear layer of this encoder, so LoRA would "
                              f"silently train less; use q, k, v, o, ffn, all-linear, or a module name such as "
                              f"{', '.join(kinds[:6])}{', ...' if len(kinds) > 6 else ''}")
        chosen.update({n: linears[n] for n in hit})
    return dict(sorted(chosen.items()))


def apply_lora(encoder: nn.Module, plan: LoraPlan, alpha: float, dropout: float) -> nn.Module:
    """The encoder with LoRA adapters on exactly `plan.modules`, base weights frozen (a PEFT model)."""
    try:
        import peft
    except ImportError:
        raise ConfigError("textcls.method=lora needs PEFT, which is not installed; run `pip install 'dla[nlp]'`") \
            from None
    # Full names: PEFT matches them exactly (it matches by suffix, so a short name could take more).
    config = peft.LoraConfig(r=plan.r, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                             target_modules=list(plan.modules), use_dora=plan.use_dora, use_rslora=plan.use_rslora,
                             modules_to_save=list(plan.saved) or None)
    with warnings.catch_warnings():
        # PEFT reads a transformers property that transformers 5 deprecates: noise for the user, not theirs to fix.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        return peft.get_peft_model(encoder, config)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_trainable(model: nn.Module, plan: LoraPlan, head: nn.Module) -> str:
    """Assert the trainable count equals r * (d_in + d_out) per adapted Linear (+ d_out each with DoRA) + the
    modules trained whole + the head; the line to print."""
    head_params = sum(p.numel() for p in head.parameters())
    expected = plan.adapter_parameters + plan.saved_parameters + head_params
    actual = trainable_parameters(model)
    saved = f" + modules_to_save {plan.saved_parameters:,}" if plan.saved else ""
    if actual != expected:  # a bug (or a PEFT change), not a user mistake
        raise AssertionError(f"LoRA trainable parameters {actual:,} != expected {expected:,} "
                             f"(adapters {plan.adapter_parameters:,}{saved} + head {head_params:,})")
    shapes = sorted({(m.in_features, m.out_features) for m in plan.modules.values()})
    kind = "DoRA" if plan.use_dora else "LoRA"
    formula = "r*(d_in+d_out)+d_out" if plan.use_dora else "r*(d_in+d_out)"
    return (f"{kind} {'+'.join(plan.targets)} r={plan.r}{' (rsLoRA scaling)' if plan.use_rslora else ''}: "
            f"{len(plan.modules)} Linear layers adapted ({', '.join(f'{i}->{o}' for i, o in shapes)}); trainable "
            f"parameters {actual:,} = sum {formula} {plan.adapter_parameters:,}{saved} + head {head_params:,} "
            "(checked)")
