"""Every registered OOD score honours the scoring contract; the built-ins compute what their papers say.

A new `@register_score` enrols itself in the contract matrix below: no edit to this file is needed, unless the
score has an option it cannot run without (recon's autoencoder); `REQUIRED` then supplies it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from dla.nn import Normalize
from dla.ood import OODError, register_score, score, score_loader, score_names
from dla.ood import scores as scores_module
from dla.ood.recon import train_autoencoder

from ..conftest import TINY_SHAPE, tiny_classifier

SHAPE = TINY_SHAPE


def _recon_options() -> dict[str, object]:
    # A pixel autoencoder fit for one epoch to 16 images of the test shape: enough to be a real one.
    return {"autoencoder": train_autoencoder(torch.rand(16, *SHAPE, generator=torch.Generator().manual_seed(9)),
                                             epochs=1, batch_size=8)}


# Options without a usable default, per score: what the contract tests pass to `score`.
REQUIRED: dict[str, Callable[[], dict[str, object]]] = {"recon": _recon_options}


def _opts(name: str) -> dict[str, object]:
    return REQUIRED[name]() if name in REQUIRED else {}


def tiny_model(seed: int = 0, classes: int = 5) -> nn.Sequential:
    return tiny_classifier(seed, classes)


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


@pytest.mark.parametrize("name", score_names())
@pytest.mark.parametrize("start", ["train", "eval", "mixed"])
def test_score_contract(name: str, start: str) -> None:
    model = tiny_model()
    model.train(start != "eval")
    if start == "mixed":
        model[2].eval()  # a frozen BatchNorm inside a training model
        model[-1].bias.requires_grad_(False)  # a frozen parameter
    modes, flags = _modes(model), [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(8, *SHAPE, generator=torch.Generator().manual_seed(1))
    x_before = x.clone()
    kw = _opts(name)

    s = score(model, x, name, **kw)

    assert s.shape == (8,) and s.dtype == torch.float32 and s.device.type == "cpu"
    assert torch.isfinite(s).all() and not s.requires_grad
    assert _modes(model) == modes  # every module back in its own mode
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BatchNorm stats untouched
    assert torch.equal(x, x_before) and x.grad is None and not x.requires_grad
    # Eval mode: scoring twice gives the same numbers (no dropout), whatever mode the model started in.
    torch.testing.assert_close(score(model, x, name, **kw), s, rtol=0, atol=0)


@pytest.mark.parametrize("name", score_names())
def test_score_is_per_sample_and_batch_size_does_not_matter(name: str) -> None:
    model = tiny_model().train()
    x = torch.rand(7, *SHAPE, generator=torch.Generator().manual_seed(2))
    kw = _opts(name)
    full = score(model, x, name, **kw)
    alone = torch.cat([score(model, x[i : i + 1], name, **kw) for i in range(len(x))])
    torch.testing.assert_close(alone, full, rtol=1e-5, atol=1e-6)
    for bs in (1, 3, 7, 100):
        torch.testing.assert_close(score(model, x, name, batch_size=bs, **kw), full, rtol=1e-5, atol=1e-6)
    # Reversing the batch reverses the scores: nothing leaks between samples.
    torch.testing.assert_close(score(model, x.flip(0), name, **kw), full.flip(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", score_names())
def test_score_leaves_a_grad_requiring_input_alone(name: str) -> None:
    model = tiny_model().eval()
    x = torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(3)).requires_grad_()
    x_before = x.detach().clone()
    kw = _opts(name)
    with torch.no_grad():  # and the caller's no_grad does not stop gradient-based scores
        s = score(model, x, name, **kw)
    assert x.grad is None and torch.equal(x.detach(), x_before)
    torch.testing.assert_close(s, score(model, x_before, name, **kw), rtol=0, atol=0)


@pytest.mark.parametrize("name", score_names())
def test_score_loader_concatenates_batches(name: str) -> None:
    model = tiny_model()
    x = torch.rand(10, *SHAPE, generator=torch.Generator().manual_seed(4))
    y = torch.zeros(10, dtype=torch.long)
    batches = [(x[:4], y[:4]), (x[4:9], y[4:9]), (x[9:], y[9:])]  # what a DataLoader yields
    kw = _opts(name)
    full = score(model, x, name, **kw)
    torch.testing.assert_close(score_loader(model, batches, name, **kw), full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(score_loader(model, [x[:5], x[5:]], name, **kw), full, rtol=1e-5, atol=1e-6)
    assert score_loader(model, [], name, **kw).shape == (0,)


# ---- the registry and its errors -----------------------------------------------------------------------------


def test_builtin_scores_are_registered() -> None:
    assert {"msp", "maxlogit", "energy", "odin"} <= set(score_names())
    assert scores_module.score_spec("odin").needs_grad and not scores_module.score_spec("msp").needs_grad


def test_register_a_new_score(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scores_module.SCORES, "_entries", dict(scores_module.SCORES.entries))

    @register_score("neg_entropy", "negative entropy of the softmax")
    def neg_entropy(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(model(x), dim=1)
        return (p * p.log()).sum(1)

    assert "neg_entropy" in score_names()
    assert score(tiny_model(), torch.rand(3, *SHAPE), "neg_entropy").shape == (3,)
    with pytest.raises(ValueError, match="registered twice"):
        register_score("neg_entropy", "again")(neg_entropy)


def test_bad_requests_raise_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = tiny_model(), torch.rand(2, *SHAPE)
    with pytest.raises(OODError, match="unknown OOD score 'mahalanobis'; known: energy, maxlogit, msp, odin"):
        score(model, x, "mahalanobis")
    with pytest.raises(OODError, match="'maxlogit' has no option 'temperature'; its options: none"):
        score(model, x, "maxlogit", temperature=2.0)
    with pytest.raises(OODError, match="'odin' has no option 'epsilon'; its options: temperature, eps"):
        score(model, x, "odin", epsilon=0.1)
    with pytest.raises(OODError, match="temperature must be > 0"):
        score(model, x, "energy", temperature=0.0)
    with pytest.raises(OODError, match="eps must be >= 0"):
        score(model, x, "odin", eps=-0.1)
    with pytest.raises(OODError, match="floating-point"):
        score(model, (x * 255).to(torch.uint8), "msp")
    with pytest.raises(OODError, match="batch_size must be a positive integer"):
        score(model, x, "msp", batch_size=0)
    with pytest.raises(OODError, match=r"logits \(B, K\); the model returned \(2, 4, 6, 6\)"):
        score(model[:2], x, "msp")
    monkeypatch.setattr(scores_module.SCORES, "_entries", dict(scores_module.SCORES.entries))
    register_score("broken", "returns one number per batch")(lambda model, x: model(x).sum())
    with pytest.raises(OODError, match=r"'broken' returned \(\) for a batch of 2; it must be \(B,\)"):
        score(model, x, "broken")


def test_empty_batch() -> None:
    assert score(tiny_model(), torch.rand(0, *SHAPE), "odin").shape == (0,)


# ---- values --------------------------------------------------------------------------------------------------


class FixedLogits(nn.Module):
    """A 'model' whose logits are its input: sample i of x is a row of logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


LOGITS = torch.tensor([[2.0, 1.0, 0.1], [-1.0, 3.0, 3.0], [0.0, 0.0, 0.0], [10.0, -5.0, 2.5], [0.3, 0.2, 0.25]])


def _softmax_max(logits: torch.Tensor, t: float) -> torch.Tensor:
    z = logits.double() / t
    e = [[math.exp(v) for v in row] for row in z.tolist()]
    return torch.tensor([max(row) / sum(row) for row in e], dtype=torch.float64)


@pytest.mark.parametrize("t", [1.0, 0.5, 3.0, 1000.0])
def test_msp_is_the_largest_softmax_probability(t: float) -> None:
    s = score(FixedLogits(), LOGITS, "msp", temperature=t)
    torch.testing.assert_close(s.double(), _softmax_max(LOGITS, t), rtol=1e-6, atol=1e-7)
    assert s[2] == pytest.approx(1 / 3)  # equal logits: uniform


def test_maxlogit_is_the_largest_logit() -> None:
    torch.testing.assert_close(score(FixedLogits(), LOGITS, "maxlogit"), torch.tensor([2.0, 3.0, 0.0, 10.0, 0.3]))


@pytest.mark.parametrize("t", [1.0, 0.5, 2.0, 100.0])
def test_energy_is_t_logsumexp(t: float) -> None:
    rows = LOGITS.double().tolist()
    by_hand = torch.tensor([t * math.log(sum(math.exp(v / t) for v in row)) for row in rows], dtype=torch.float64)
    torch.testing.assert_close(
        score(FixedLogits(), LOGITS, "energy", temperature=t).double(), by_hand, rtol=1e-6, atol=1e-5
    )


def test_energy_approaches_maxlogit_as_temperature_falls() -> None:
    maxlogit = score(FixedLogits(), LOGITS, "maxlogit")
    k = LOGITS.shape[1]
    for t in (1.0, 0.1, 0.01, 0.001):
        e = score(FixedLogits(), LOGITS, "energy", temperature=t)
        # maxlogit <= T logsumexp(l / T) <= maxlogit + T log K
        assert (e >= maxlogit - 1e-5).all() and (e <= maxlogit + t * math.log(k) + 1e-5).all()
    torch.testing.assert_close(score(FixedLogits(), LOGITS, "energy", temperature=1e-4), maxlogit, atol=1e-3, rtol=0)


@pytest.mark.parametrize("t", [1.0, 10.0, 1000.0])
def test_odin_without_perturbation_is_tempered_msp(t: float) -> None:
    model, x = tiny_model(), torch.rand(6, *SHAPE, generator=torch.Generator().manual_seed(5))
    assert torch.equal(score(model, x, "odin", temperature=t, eps=0.0), score(model, x, "msp", temperature=t))


def test_odin_steps_along_the_analytic_gradient() -> None:
    # A linear classifier in float64, where grad_x log softmax_y(Wx/T + b/T) = (W_y - p^T W) / T in closed form:
    # ODIN's input step is checked against it, not against autograd.
    torch.manual_seed(6)
    d, k, t, eps = 3 * 4 * 4, 4, 10.0, 0.01
    linear = nn.Linear(d, k).double()
    model = nn.Sequential(nn.Flatten(), linear)
    x = torch.rand(5, 3, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    w, b = linear.weight.detach(), linear.bias.detach()
    p = torch.softmax((x.flatten(1) @ w.T + b) / t, dim=1)
    y = p.argmax(1)
    grad = (w[y] - p @ w) / t  # (B, d)
    x_tilde = (x.flatten(1) + eps * grad.sign()).clamp(0, 1)
    by_hand = torch.softmax((x_tilde @ w.T + b) / t, dim=1).amax(1)
    s = score(model, x, "odin", temperature=t, eps=eps)
    torch.testing.assert_close(s, by_hand.float(), rtol=1e-6, atol=1e-7)
    assert (s.double() > p.amax(1)).all()  # the step raised every sample's confidence


def _trained_toy() -> tuple[nn.Module, torch.Tensor]:
    """A small CNN fit for 60 steps to 3 classes of 'which third of the image is bright'; returns it and test images."""
    g = torch.Generator().manual_seed(7)

    def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 3, (n,), generator=g)
        x = 0.35 + 0.1 * torch.rand(n, 1, 9, 9, generator=g)
        for c in range(3):
            x[y == c, :, 3 * c : 3 * c + 3, :] += 0.3
        return x.clamp(0.05, 0.95), y  # interior pixels: the [0, 1] clamp never binds at eps = 0.0014

    torch.manual_seed(7)
    model = nn.Sequential(
        Normalize((0.45,), (0.15,)),
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 81, 3),
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = images(256)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    x_test, y_test = images(200)
    with torch.no_grad():
        assert (model(x_test).argmax(1) == y_test).float().mean() > 0.9  # it did learn the task
    return model, x_test


def test_odin_perturbation_raises_confidence_on_a_trained_model() -> None:
    model, x = _trained_toy()
    base = score(model, x, "odin", eps=0.0)  # MSP at T = 1000
    odin = score(model, x, "odin")  # the defaults: T = 1000, eps = 0.0014
    gain = odin - base
    assert (gain > 0).float().mean() >= 0.95 and gain.mean() > 0
    # A random-sign step of the same size is no better than chance: ODIN's direction is what helps.
    r = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(8)).double() * 2 - 1
    random_gain = score(model, (x + 0.0014 * r).float(), "msp", temperature=1000.0) - base
    assert 0.2 < (random_gain > 0).float().mean() < 0.8
    assert gain.mean() > 5 * random_gain.abs().mean()


def test_score_many_shares_one_forward_pass_and_equals_one_call_per_score(monkeypatch: pytest.MonkeyPatch) -> None:
    from dla.ood import score_many

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    x = torch.rand(23, 3, 2, 2)
    methods = {"msp": {"temperature": 2.0}, "maxlogit": {}, "energy": {}, "odin": {"temperature": 10.0, "eps": 0.01}}
    want = {m: score(model, x, m, batch_size=10, **kw) for m, kw in methods.items()}
    calls = {"n": 0}
    forward = model.forward

    def counted(inp: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return forward(inp)

    monkeypatch.setattr(model, "forward", counted)
    got = score_many(model, x, methods, batch_size=10)
    assert list(got) == list(methods)
    for m in methods:
        assert torch.equal(got[m], want[m]), m  # bit for bit: the same chunks, the same operations
    # 3 chunks: one forward each for the three logit scores together, 2 x 3 for ODIN (gradient, then scores).
    assert calls["n"] == 3 + 6
    with pytest.raises(OODError, match="has no option 'T'"):
        score_many(model, x, {"msp": {"T": 1}, "energy": {}})
