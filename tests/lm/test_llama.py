"""The LLaMA-style model: RoPE against complex multiplication, its relative-position property, grouped-query
attention against plain attention on repeated heads, the parameter count by hand, and equal parameters across
head counts (the n_head sweep). Causality and the KV cache are in the text-model contract (test_gpt.py)."""

from __future__ import annotations

import pytest
import torch

from dla.errors import ConfigError
from dla.models import TextInputs, build_model
from dla.models.llama import Llama, LlamaConfig
from dla.models.rope import apply_rope, rope_angles


def complex_rope(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoPE as the paper writes it: pair i of position m times e^(i m theta_i), theta_i = base^(-2i / d)."""
    *_, T, d = x.shape
    theta = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d / 2,)
    m = torch.arange(T, dtype=torch.float64)[:, None]  # (T, 1)
    rotation = torch.polar(torch.ones(T, d // 2, dtype=torch.float64), m * theta)  # e^(i m theta_i), (T, d / 2)
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(z * rotation).flatten(-2)


def test_rope_is_complex_multiplication() -> None:
    x = torch.randn(2, 3, 20, 8)
    cos, sin = rope_angles(8, 20)
    torch.testing.assert_close(apply_rope(x, cos, sin).double(), complex_rope(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(apply_rope(x, cos, sin)[:, :, 0], x[:, :, 0])  # position 0 is not rotated
    # A rotation keeps each pair's length.
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))


def test_rope_dot_products_depend_on_the_offset_only() -> None:
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    cos, sin = rope_angles(16, 40)

    def score(m: int, n: int) -> torch.Tensor:  # query at position m against key at position n
        return (apply_rope(q, cos[m:m + 1], sin[m:m + 1]) * apply_rope(k, cos[n:n + 1], sin[n:n + 1])).sum()

    torch.testing.assert_close(score(7, 3), score(30, 26))
    torch.testing.assert_close(score(5, 5), (q * k).sum())
    assert not torch.allclose(score(7, 3), score(7, 4))
    with pytest.raises(ValueError, match="even"):
        rope_angles(7, 4)


def test_grouped_query_attention_equals_attention_on_repeated_kv_heads() -> None:
    torch.manual_seed(0)
    gqa = Llama(LlamaConfig(n_layer=2, n_head=4, n_kv_head=2, n_embd=16), vocab_size=11, block_size=12).eval()
    full = Llama(LlamaConfig(n_layer=2, n_head=4, n_kv_head=4, n_embd=16), vocab_size=11, block_size=12).eval()
    state = gqa.state_dict()
    for i in range(2):  # each key/value head serves two query heads: repeat its rows for the 4-head model
        k, v = state[f"blocks.{i}.attn.kv.weight"].view(2, 2, 4, 16)  # (k|v, n_kv, hs, C)
        state[f"blocks.{i}.attn.kv.weight"] = torch.cat(
            [k.repeat_interleave(2, dim=0), v.repeat_interleave(2, dim=0)]).reshape(32, 16)
    full.load_state_dict(state)
    idx = torch.randint(0, 11, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(gqa(idx), full(idx))
    assert gqa.new_cache(2).k[0].shape == (2, 2, 12, 4)  # the cache holds the 2 shared heads only


def test_parameter_count_by_hand() -> None:
    C, V, L, H = 32, 11, 2, 96  # hidden: 8/3 * 32 = 85.3 -> 96, a multiple of 32
    model = Llama(LlamaConfig(n_layer=L, n_head=4, n_kv_head=2, n_embd=C), vocab_size=V, block_size=16)
    kv = 2 * (C // 4) * 2  # 2 kv heads of size 8, keys and values
    per_block = C + (C * C + C * kv + C * C) + C + 3 * C * H  # norm, q/kv/proj, norm, gate/up/down
    assert sum(p.numel() for p in model.parameters()) == V * C + L * per_block + C + C * V
    tied = Llama(LlamaConfig(n_layer=L, n_head=4, n_kv_head=2, n_embd=C, tie_weights=True), V, 16)
    assert tied.head.weight is tied.tok_emb.weight
    assert sum(p.numel() for p in tied.parameters()) == V * C + L * per_block + C


def test_head_count_does_not_change_the_parameter_count() -> None:
    counts = {h: sum(p.numel() for p in build_model(LlamaConfig(n_head=h), TextInputs(72, 64)).parameters())
              for h in (4, 16)}
    assert counts[4] == counts[16]


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"n_head": 3}, "must divide model.n_embd"),
    ({"n_head": 128}, "must be even"),
    ({"n_head": 4, "n_kv_head": 3}, "must divide model.n_head"),
])
def test_bad_head_counts_are_one_line(overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Llama(LlamaConfig(n_embd=128, **overrides), vocab_size=11, block_size=8)
