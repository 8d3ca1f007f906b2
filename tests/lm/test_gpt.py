"""The GPT model and its sampler: causality, the KV cache against the full forward, seeded sampling, and
that a tiny model can learn a tiny text. Every text model in the registry (gpt, llama) enrols in the contract
tests: shapes, gradients, causality, state dict round trip, and the KV cache against the no-cache path."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dla.config import ModelConfig
from dla.models import TextInputs, build_model, model_config_class, model_names
from dla.models.gpt import GPT, GPTConfig
from dla.text.generate import Sampling, generate, next_token

INPUTS = TextInputs(vocab_size=11, block_size=16)


def tiny_gpt(seed: int = 0, dropout: float = 0.0, block_size: int = 16) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, dropout=dropout), vocab_size=11, block_size=block_size)


@pytest.mark.parametrize("name", model_names("text"))
def test_text_model_contract(name: str) -> None:
    cfg = model_config_class(name)()
    assert isinstance(cfg, ModelConfig) and cfg.name == name
    for f in dataclasses.fields(cfg):
        assert f.metadata.get("help"), f"{name}.{f.name} has no help text"
    torch.manual_seed(0)
    model = build_model(cfg, INPUTS)
    idx = torch.randint(0, INPUTS.vocab_size, (3, INPUTS.block_size))
    logits = model(idx)
    assert logits.shape == (3, INPUTS.block_size, INPUTS.vocab_size)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # Causal: changing token t leaves the logits of positions < t unchanged.
    model.eval()
    changed = idx.clone()
    changed[:, 9] = (changed[:, 9] + 1) % INPUTS.vocab_size
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])
    # Weights load into a fresh instance and reproduce the outputs.
    fresh = build_model(cfg, INPUTS).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(idx), a)


@pytest.mark.parametrize("name", model_names("text"))
def test_text_model_kv_cache_matches_the_full_forward(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(model_config_class(name)(), INPUTS).eval()
    idx = torch.randint(0, INPUTS.vocab_size, (2, INPUTS.block_size))
    with torch.no_grad():
        full = model(idx)  # (B, T, V)
        cache = model.new_cache(2)
        # A 5-token prefill, a 4-token chunk (masked against the cached keys), then one token at a time.
        parts = [model(idx[:, :5], cache), model(idx[:, 5:9], cache)]
        parts += [model(idx[:, t:t + 1], cache) for t in range(9, INPUTS.block_size)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-5)
    assert cache.pos == INPUTS.block_size


@pytest.mark.parametrize("name", model_names("text"))
def test_text_model_generates_the_same_with_and_without_cache(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(model_config_class(name)(), TextInputs(vocab_size=11, block_size=8))
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    # 30 new tokens > block_size: both paths slide the context the same way (the cache is reset and refilled).
    with_cache = generate(model, prompt, 30, Sampling(temperature=0), use_cache=True)
    without = generate(model, prompt, 30, Sampling(temperature=0), use_cache=False)
    assert with_cache.ids.shape == (2, 33)
    assert torch.equal(with_cache.ids, without.ids)
    sampled = [generate(model, prompt, 20, Sampling(1.0, 0, 1.0), seed=3, use_cache=c).ids for c in (True, False)]
    assert torch.equal(*sampled)


def test_image_inputs_are_refused_for_a_text_model() -> None:
    from dla.errors import ConfigError
    from dla.models import ModelInputs

    with pytest.raises(ConfigError, match="text model"):
        build_model(GPTConfig(), ModelInputs((1, 28, 28), 10, (0.5,), (0.5,)))


def test_weights_are_tied_and_counted_once() -> None:
    model = tiny_gpt()
    assert model.head.weight is model.tok_emb.weight
    c, v, t, L = 16, 11, 16, 2
    per_block = (4 * c) + (3 * c * c + 3 * c) + (c * c + c) + (4 * c * c + 4 * c) + (4 * c * c + c)
    expected = v * c + t * c + L * per_block + 2 * c  # embeddings, blocks, final LayerNorm; head shared
    assert sum(p.numel() for p in model.parameters()) == expected


def test_kv_cache_gives_the_full_forward_logits() -> None:
    model = tiny_gpt().eval()
    idx = torch.randint(0, 11, (2, 16))
    with torch.no_grad():
        full = model(idx)  # (B, T, V)
        cache = model.new_cache(2)
        # A 5-token prefill, then a 4-token chunk (a mask against the cached keys), then one token at a time.
        parts = [model(idx[:, :5], cache), model(idx[:, 5:9], cache)]
        parts += [model(idx[:, t:t + 1], cache) for t in range(9, 16)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-5)
    assert cache.pos == 16
    with pytest.raises(ValueError, match="block_size"):
        model(idx[:, :1], cache)  # the cache is full: positions end at block_size


def test_generation_with_and_without_cache_agree_past_the_context() -> None:
    model = tiny_gpt(block_size=8)
    prompt = torch.tensor([[1, 2, 3]])
    # 30 new tokens > block_size: both paths slide the context the same way.
    with_cache = generate(model, prompt, 30, Sampling(temperature=0), use_cache=True)
    without = generate(model, prompt, 30, Sampling(temperature=0), use_cache=False)
    assert with_cache.ids.shape == (1, 33)
    assert torch.equal(with_cache.ids, without.ids)
    assert torch.equal(with_cache.ids[:, :3], prompt)


def test_sampling_is_reproducible_with_a_seed() -> None:
    model = tiny_gpt()
    prompt = torch.tensor([[4, 5]] * 3)
    s = Sampling(temperature=1.0, top_k=0, top_p=1.0)
    a = generate(model, prompt, 20, s, seed=7).ids
    b = generate(model, prompt, 20, s, seed=7).ids
    c = generate(model, prompt, 20, s, seed=8).ids
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_top_k_and_top_p_keep_only_the_allowed_tokens() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    k2 = {next_token(logits, Sampling(1.0, top_k=2, top_p=1.0), g).item() for _ in range(300)}
    assert k2 == {0, 1}
    # top_p = 0.75: 0.5 alone is not enough, 0.5 + 0.3 is; the third token is never drawn.
    p = {next_token(logits, Sampling(1.0, top_k=0, top_p=0.75), g).item() for _ in range(300)}
    assert p == {0, 1}
    # Frequencies of the kept tokens follow their renormalised probabilities (0.5 / 0.8 = 0.625).
    draws = torch.tensor([next_token(logits, Sampling(1.0, top_k=2, top_p=1.0), g).item() for _ in range(4000)])
    assert abs((draws == 0).float().mean().item() - 0.625) < 0.03
    assert next_token(logits, Sampling(temperature=0), None).item() == 0


def test_a_tiny_model_overfits_a_tiny_text() -> None:
    text = "nel mezzo del cammin di nostra vita\n" * 4
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text])
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32), vocab_size=len(chars), block_size=32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.stack([ids[i:i + 32] for i in range(0, 100, 4)])
    y = torch.stack([ids[i + 1:i + 33] for i in range(0, 100, 4)])
    for _ in range(100):
        loss = F.cross_entropy(model(x).view(-1, len(chars)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    out = generate(model, torch.tensor([[chars.index(c) for c in "nel mezzo"]]), 26, Sampling(temperature=0))
    assert "".join(chars[i] for i in out.ids[0].tolist()) == "nel mezzo del cammin di nostra vita"
