"""OOD sets in the ID shape (channels, size), their names, seeded noise, and the held-out-classes split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dla.config import ConfigError
from dla.data import ImageSet
from dla.data.splits import keep_classes
from dla.ood import OODError
from dla.ood.data import convert_images, load_ood_set, noise_images, parse_sources


def test_grey_to_colour_repeats_and_colour_to_grey_averages() -> None:
    grey = torch.randint(0, 256, (4, 1, 5, 5), dtype=torch.uint8)
    colour = convert_images(grey, (3, 5, 5))
    assert colour.shape == (4, 3, 5, 5) and colour.dtype == torch.uint8
    assert all(torch.equal(colour[:, c], grey[:, 0]) for c in range(3))
    rgb = torch.tensor([[[[0]], [[100]], [[201]]]], dtype=torch.uint8)  # (1, 3, 1, 1)
    assert convert_images(rgb, (1, 1, 1)).flatten().tolist() == [100]  # (0 + 100 + 201) / 3 = 100.33
    assert torch.equal(convert_images(grey, (1, 5, 5)), grey)
    with pytest.raises(OODError, match="cannot convert 2-channel images to 3 channels"):
        convert_images(torch.zeros(1, 2, 4, 4, dtype=torch.uint8), (3, 4, 4))


def test_resizing_is_bilinear_interpolation() -> None:
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    small = convert_images(x, (1, 28, 28))  # CIFAR-like -> MNIST-like: average the channels, then shrink
    grey = x.float().mean(1, keepdim=True).round()
    expected = F.interpolate(grey, size=(28, 28), mode="bilinear", align_corners=False, antialias=True)
    assert small.shape == (3, 1, 28, 28)
    assert (small.float() - expected.round().clamp(0, 255)).abs().max() <= 1  # rounding only
    big = convert_images(torch.full((1, 1, 28, 28), 77, dtype=torch.uint8), (3, 32, 32))
    assert big.shape == (1, 3, 32, 32) and (big == 77).all()  # a constant image stays constant


def test_noise_is_seeded_and_of_the_id_shape() -> None:
    a, b = noise_images(10, (1, 28, 28), seed=0), noise_images(10, (1, 28, 28), seed=0)
    assert torch.equal(a, b) and a.shape == (10, 1, 28, 28) and a.dtype == torch.uint8
    assert not torch.equal(a, noise_images(10, (1, 28, 28), seed=1))
    s = load_ood_set(parse_sources("noise")[0], Path("unused"), (3, 8, 8), limit=17, seed=3)
    assert s.x.shape == (17, 3, 8, 8) and torch.equal(s.x, noise_images(17, (3, 8, 8), seed=3))


def test_parse_sources() -> None:
    sources = parse_sources("fashion_mnist, noise,imagefolder:cifar10_sample,heldout")
    assert [(s.dataset, s.path) for s in sources] == [("fashion_mnist", ""), ("noise", ""),
                                                      ("imagefolder", "cifar10_sample"), ("heldout", "")]
    assert sources[2].slug == "imagefolder-cifar10_sample"
    with pytest.raises(OODError, match="unknown OOD set 'fashion'"):
        parse_sources("fashion")
    with pytest.raises(OODError, match="unknown OOD set 'noise:x'"):
        parse_sources("noise:x")


def test_keep_classes_remaps_labels_and_returns_the_rest() -> None:
    y = torch.tensor([0, 1, 2, 3, 4, 2, 0, 4])
    x = torch.arange(8, dtype=torch.uint8).view(8, 1, 1, 1)
    data = ImageSet(x, y, ["a", "b", "c", "d", "e"])
    kept, rest = keep_classes(data, [4, 0, 2])
    assert kept.classes == ["e", "a", "c"]
    assert kept.x.flatten().tolist() == [0, 2, 4, 5, 6, 7]  # original order kept
    assert kept.y.tolist() == [1, 2, 0, 2, 1, 0]  # 4 -> 0, 0 -> 1, 2 -> 2
    assert rest.x.flatten().tolist() == [1, 3] and rest.y.tolist() == [1, 3] and rest.classes == data.classes
    for keep, needle in [([0, 5], "has 5, which is not a class index"), ([1, 1], "lists a class twice"),
                         ([2], "keeps fewer than 2 classes")]:
        with pytest.raises(ConfigError, match=needle):
            keep_classes(data, keep)
