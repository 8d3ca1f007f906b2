"""TensorLoader (seeded, epoch-keyed batching) and the batched flip / padded-crop augmentation."""

from __future__ import annotations

import pytest
import torch

from dla.config import AugmentConfig
from dla.data.loader import TensorLoader, augment


def make(n: int = 103) -> tuple[torch.Tensor, torch.Tensor]:
    """Example i has every pixel = i % 256 and label i, so batches can be traced back to indices."""
    x = (torch.arange(n) % 256).to(torch.uint8).reshape(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return x, torch.arange(n)


def batches(loader: TensorLoader) -> list[list[int]]:
    out = []
    for xb, yb in loader:
        assert xb.dtype == torch.uint8 and yb.dtype == torch.int64
        assert torch.equal(xb[:, 0, 0, 0].long(), yb % 256)  # images stay with their labels
        out.append(yb.tolist())
    return out


def flatten(bs: list[list[int]]) -> list[int]:
    return [i for b in bs for i in b]


def test_unshuffled_order_is_sequential() -> None:
    loader = TensorLoader(*make(25), batch_size=10)
    assert len(loader) == 3
    assert batches(loader) == [list(range(10)), list(range(10, 20)), list(range(20, 25))]
    loader.set_epoch(4)
    assert batches(loader) == [list(range(10)), list(range(10, 20)), list(range(20, 25))]


def test_shuffle_depends_only_on_seed_and_epoch() -> None:
    x, y = make()
    a = TensorLoader(x, y, batch_size=10, shuffle=True, seed=7)
    b = TensorLoader(x, y, batch_size=10, shuffle=True, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    first = batches(a)
    assert batches(a) == first  # iterating again gives the same epoch
    assert batches(b) == first  # a fresh loader at the same (seed, epoch) too
    b.set_epoch(0)
    for _ in batches(b):  # iterating other epochs first changes nothing
        pass
    b.set_epoch(3)
    assert batches(b) == first
    a.set_epoch(4)
    assert batches(a) != first
    c = TensorLoader(x, y, batch_size=10, shuffle=True, seed=8)
    c.set_epoch(3)
    assert batches(c) != first
    assert first != [list(range(i, min(i + 10, 103))) for i in range(0, 103, 10)]  # actually shuffled
    # The generator is the documented one: the same draws reproduce the permutation.
    perm = torch.randperm(103, generator=torch.Generator().manual_seed(7 * 1_000_003 + 3)).tolist()
    assert flatten(first) == perm


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_example_once_without_drop_last(shuffle: bool) -> None:
    loader = TensorLoader(*make(103), batch_size=10, shuffle=shuffle, seed=1)
    got = batches(loader)
    assert len(got) == len(loader) == 11
    assert [len(b) for b in got] == [10] * 10 + [3]
    assert sorted(flatten(got)) == list(range(103))


@pytest.mark.parametrize("shuffle", [False, True])
def test_drop_last(shuffle: bool) -> None:
    loader = TensorLoader(*make(103), batch_size=10, shuffle=shuffle, drop_last=True, seed=1)
    got = batches(loader)
    assert len(loader) == len(got) == 103 // 10
    assert all(len(b) == 10 for b in got)
    flat = flatten(got)
    assert len(set(flat)) == 100 and set(flat) <= set(range(103))
    # A single (short) batch is never dropped: there would be nothing to train on.
    small = TensorLoader(*make(7), batch_size=10, drop_last=True)
    assert len(small) == 1 and batches(small) == [list(range(7))]
    exact = TensorLoader(*make(20), batch_size=10, drop_last=True)
    assert len(exact) == 2 and flatten(batches(exact)) == list(range(20))


# --------------------------------------------------------------------------------------------------
# augment


def images(b: int = 16, c: int = 3, h: int = 9, w: int = 7, seed: int = 0) -> torch.Tensor:
    # Strictly positive pixels, so zero padding is distinguishable from image content.
    return torch.randint(1, 256, (b, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def reference_augment(x: torch.Tensor, flip: bool, p: int, seed: int) -> torch.Tensor:
    """Per-sample Python loop, drawing from a generator in the same order as `augment` does."""
    g = torch.Generator().manual_seed(seed)
    b, c, h, w = x.shape
    flips = (torch.rand(b, generator=g) < 0.5).tolist() if flip else [False] * b
    dy = torch.randint(0, 2 * p + 1, (b,), generator=g).tolist() if p else [0] * b
    dx = torch.randint(0, 2 * p + 1, (b,), generator=g).tolist() if p else [0] * b
    out = torch.empty_like(x)
    for i in range(b):
        img = x[i].flip(2) if flips[i] else x[i]
        padded = torch.zeros(c, h + 2 * p, w + 2 * p, dtype=x.dtype)
        padded[:, p: p + h, p: p + w] = img
        for r in range(h):
            for col in range(w):
                out[i, :, r, col] = padded[:, dy[i] + r, dx[i] + col]
    return out


def test_augment_off_is_identity() -> None:
    x = images()
    g = torch.Generator().manual_seed(0)
    assert augment(x, AugmentConfig(), g) is x
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())  # no draws


@pytest.mark.parametrize(("flip", "p"), [(True, 0), (False, 2), (True, 3), (True, 4)])
def test_augment_matches_a_per_sample_reference(flip: bool, p: int) -> None:
    x = images(b=24)
    out = augment(x, AugmentConfig(flip=flip, crop_padding=p), torch.Generator().manual_seed(11))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out, reference_augment(x, flip, p, seed=11))
    again = augment(x, AugmentConfig(flip=flip, crop_padding=p), torch.Generator().manual_seed(11))
    assert torch.equal(out, again)
    other = augment(x, AugmentConfig(flip=flip, crop_padding=p), torch.Generator().manual_seed(12))
    assert not torch.equal(out, other)


def test_flip_is_a_mirror_or_nothing() -> None:
    x = images(b=64)
    out = augment(x, AugmentConfig(flip=True), torch.Generator().manual_seed(3))
    flipped = [bool(torch.equal(o, xi.flip(-1))) for o, xi in zip(out, x, strict=True)]
    kept = [bool(torch.equal(o, xi)) for o, xi in zip(out, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54  # about half of 64


def test_crop_is_a_shifted_window_of_the_padded_image() -> None:
    p = 2
    x = images(b=40, c=2, h=6, w=5)
    out = augment(x, AugmentConfig(crop_padding=p), torch.Generator().manual_seed(5))
    seen = set()
    for o, xi in zip(out, x, strict=True):
        padded = torch.nn.functional.pad(xi, (p, p, p, p))
        shifts = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                  if torch.equal(o, padded[:, dy: dy + 6, dx: dx + 5])]
        assert len(shifts) == 1  # exactly one window (pixels are never 0, so windows are distinguishable)
        seen.add(shifts[0])
    assert len(seen) > 5  # offsets vary across the batch


def test_augment_draws_from_the_given_generator_only() -> None:
    x = images()
    cfg = AugmentConfig(flip=True, crop_padding=2)
    torch.manual_seed(0)
    a = augment(x, cfg, torch.Generator().manual_seed(1))
    torch.manual_seed(123)  # the global RNG must not matter
    b = augment(x, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


@pytest.mark.parametrize("shuffle", [False, True])
def test_rank_shards_partition_each_global_batch(shuffle: bool) -> None:
    x = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1)
    y = torch.arange(40)
    whole = list(TensorLoader(x, y, 8, shuffle=shuffle, drop_last=True, seed=3))
    shards = [list(TensorLoader(x, y, 8, shuffle=shuffle, drop_last=True, seed=3, rank=r, world=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(whole)
    for (xb, yb), (x0, y0), (x1, y1) in zip(whole, shards[0], shards[1], strict=True):
        assert torch.equal(y0, yb[0::2]) and torch.equal(y1, yb[1::2])
        assert torch.equal(x0, xb[0::2]) and torch.equal(x1, xb[1::2])


def test_augmenting_a_shard_equals_the_shard_of_the_augmented_batch() -> None:
    cfg = AugmentConfig(flip=True, crop_padding=3)
    x = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    whole = augment(x, cfg, torch.Generator().manual_seed(7))
    for rank in range(3):
        part = augment(x[rank::3], cfg, torch.Generator().manual_seed(7), rank=rank, world=3)
        assert torch.equal(part, whole[rank::3])
