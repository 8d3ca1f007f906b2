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
from dataclasses import dataclass

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

    @property
    def adapter_parameters(self) -> int:
        return sum(self.r * (m.in_features + m.out_features) for m in self.modules.values())


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


def plan_lora(encoder: nn.Module, targets: str, r: int) -> LoraPlan:
    """The Linear layers each target name selects; a name that selects nothing is refused."""
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
    return LoraPlan(targets=names, modules=dict(sorted(chosen.items())), r=r)


def apply_lora(encoder: nn.Module, plan: LoraPlan, alpha: float, dropout: float) -> nn.Module:
    """The encoder with LoRA adapters on exactly `plan.modules`, base weights frozen (a PEFT model)."""
    try:
        import peft
    except ImportError:
        raise ConfigError("textcls.method=lora needs PEFT, which is not installed; run `pip install 'dla[nlp]'`") \
            from None
    config = peft.LoraConfig(r=plan.r, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                             target_modules=list(plan.modules))  # full names: PEFT matches them exactly
    with warnings.catch_warnings():
        # PEFT reads a transformers property that transformers 5 deprecates: noise for the user, not theirs to fix.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        return peft.get_peft_model(encoder, config)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_trainable(model: nn.Module, plan: LoraPlan, head: nn.Module) -> str:
    """Assert the trainable count equals r * (d_in + d_out) per adapted Linear + the head; the line to print."""
    head_params = sum(p.numel() for p in head.parameters())
    expected = plan.adapter_parameters + head_params
    actual = trainable_parameters(model)
    if actual != expected:  # a bug (or a PEFT change), not a user mistake
        raise AssertionError(f"LoRA trainable parameters {actual:,} != expected {expected:,} "
                             f"(adapters {plan.adapter_parameters:,} + head {head_params:,})")
    shapes = sorted({(m.in_features, m.out_features) for m in plan.modules.values()})
    return (f"LoRA {'+'.join(plan.targets)} r={plan.r}: {len(plan.modules)} Linear layers adapted "
            f"({', '.join(f'{i}->{o}' for i, o in shapes)}); trainable parameters {actual:,} = "
            f"sum r*(d_in+d_out) {plan.adapter_parameters:,} + head {head_params:,} (checked)")
