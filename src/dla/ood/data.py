"""OOD image sets brought to the in-distribution (ID) shape: registered datasets, seeded noise, held-out classes,
attacked ID images; each in a benchmark group (near / far / adversarial).

A classifier only accepts images of its own shape, so every OOD set is converted to the ID (C, H, W):

- channels: grey -> colour repeats the grey channel; colour -> grey averages the channels (equal weights, not a
  luminance formula: the point is a valid input, and the mean keeps the pixel range); other counts are refused;
- size: `F.interpolate` (bilinear, antialiased when shrinking, on float pixels, rounded back to uint8) when the
  sizes differ. Images stay uint8 in [0, 255] until they are scored.

So MNIST and Fashion-MNIST (1 x 28 x 28) are valid far-OOD sets for a 3 x 32 x 32 CIFAR-10 model: the grey channel
repeated three times, then resized to 32 x 32.

OOD set names (`dla ood --ood a,b`):
- a registered dataset (`dla list --datasets`): its *test* split, e.g. `fashion_mnist`, `mnist`, `svhn`,
  `tiny_imagenet` (its 10,000 unlabelled test images; the ODIN grid tunes on its val images);
- `imagefolder:PATH`: an ImageFolder tree (PATH under the data root, or absolute), its test split or, without
  one, all its images;
- `noise`: uniform noise of the ID shape, seeded (`--seed`), never the training noise;
- `gaussian`: ODIN's "Gaussian" set, every pixel N(0.5, 1) clipped to [0, 1] (Liang et al. 2018), seeded;
- `heldout`: the test images of the classes the run was trained without (`data.classes`);
- `fgsm` / `fgsm:EPS`: the ID test images scored, each attacked by FGSM (`dla.attacks.fgsm`, untargeted, the
  true label) at eps = EPS (default 8/255) against the run's own model: the lab's "corrupted ID data as OOD".
  Images stay 8-bit, so EPS must be a whole number of grey levels (k/255).

Groups (`OODSource.group`, OpenOOD v1.5's benchmark split, Zhang et al. 2023): "near" OOD shares the ID data's
kind of images and differs in classes (semantic shift), "far" OOD differs in kind too, "adversarial" is attacked ID
data. The group depends on the ID benchmark (Fashion-MNIST is near-OOD for MNIST, far-OOD for CIFAR-10), so it is
looked up in `BENCHMARK_GROUPS[id dataset]`, then `DEFAULT_GROUPS`, else "other"; `--group SET=GROUP` overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dla.data.registry import ImageSet, LoadContext, dataset_names, get_dataset
from dla.ood.metrics import OODError

SPECIAL = ("noise", "gaussian", "heldout", "fgsm")
NOISE = ("noise", "gaussian")  # unlabelled synthetic sets
FGSM_EPS = 8 / 255  # `fgsm` without :EPS; the usual L_inf budget for CIFAR-10

# OOD set -> group, per ID dataset (OpenOOD v1.5: CIFAR-10 near = CIFAR-100, Tiny-ImageNet; far = MNIST, SVHN, ...;
# MNIST near = Fashion-MNIST (and NotMNIST); far = CIFAR-10, Tiny-ImageNet, ...). Datasets not listed: DEFAULT_GROUPS.
_CIFAR10 = {"tiny_imagenet": "near", "cifar100": "near", "mnist": "far", "fashion_mnist": "far", "svhn": "far"}
_MNIST = {"fashion_mnist": "near", "cifar10": "far", "cifar10_jpeg": "far", "cifar100": "far", "svhn": "far",
          "tiny_imagenet": "far"}
BENCHMARK_GROUPS: dict[str, dict[str, str]] = {
    "cifar10": _CIFAR10,
    "cifar10_jpeg": _CIFAR10,
    "cifar100": {"cifar10": "near", "cifar10_jpeg": "near", "tiny_imagenet": "near", "mnist": "far",
                 "fashion_mnist": "far", "svhn": "far"},
    "mnist": _MNIST,
    "fashion_mnist": {**_MNIST, "fashion_mnist": "far", "mnist": "near"},
}
DEFAULT_GROUPS = {"heldout": "near", "noise": "far", "gaussian": "far", "fgsm": "adversarial"}
GROUP_ORDER = ("near", "far", "adversarial", "other")  # table order; any other group name comes after, sorted


@dataclass(frozen=True)
class OODSource:
    """A parsed OOD set name: a registered dataset (with an ImageFolder path) or one of `SPECIAL`."""

    name: str  # as the user wrote it; names the output folder (made safe by `slug`)
    dataset: str  # registered dataset, or one of SPECIAL
    path: str = ""  # imagefolder only
    group: str = "other"  # near / far / adversarial / other: the table's per-group means
    eps: float = 0.0  # fgsm only: the attack's L_inf radius in pixel units

    @property
    def slug(self) -> str:
        """A plain folder name for this set's plots: 'imagefolder:cifar10_sample' -> 'imagefolder-cifar10_sample'."""
        return "".join(c if c.isalnum() or c in "._-" else "-" for c in self.name).strip("-.") or "ood"


def default_group(dataset: str, id_dataset: str) -> str:
    """The benchmark group of OOD set `dataset` against a model trained on `id_dataset` (see the module docstring)."""
    return BENCHMARK_GROUPS.get(id_dataset, {}).get(dataset) or DEFAULT_GROUPS.get(dataset, "other")


def _fgsm_eps(word: str, text: str) -> float:
    from dla.ood.odin_grid import parse_values

    (eps,) = parse_values(text, f"--ood {word}", minimum=0, strict=True) if text else [FGSM_EPS]
    if eps > 1 or abs(eps * 255 - round(eps * 255)) > 1e-6:
        raise OODError(f"--ood {word}: the attacked images are 8-bit like every OOD set, so eps must be a whole "
                       "number of grey levels in (0, 1], such as fgsm:8/255 or fgsm:2/255")
    return eps


def _parse_one(w: str, known: list[str]) -> OODSource:
    name, _, path = w.partition(":")
    if name == "fgsm":
        return OODSource(w, name, eps=_fgsm_eps(w, path))
    if name in SPECIAL and not path:
        return OODSource(w, name)
    if name == "imagefolder":
        if not path:
            raise OODError("--ood imagefolder needs a folder: imagefolder:PATH (under the data root, or absolute)")
        return OODSource(w, name, path)
    if name in known and not path:
        return OODSource(w, name)
    raise OODError(f"unknown OOD set {w!r}; use a dataset ({', '.join(known)}), imagefolder:PATH, noise, gaussian, "
                   "fgsm[:EPS] (attacked ID test images), or heldout (the classes a data.classes run left out)")


def parse_sources(text: str, id_dataset: str = "", groups: Mapping[str, str] | None = None) -> list[OODSource]:
    """'fashion_mnist,noise,imagefolder:cifar10_sample' -> sources, checked against the dataset registry, each
    in its group against `id_dataset` (`groups`: set name -> group, overriding the benchmark's)."""
    words = [w.strip() for w in text.split(",")]
    if not text.strip() or not all(words):
        raise OODError(f"--ood {text!r} has an empty name; give a comma list such as fashion_mnist,noise")
    known = [n for n in dataset_names() if n != "noise"]
    groups = dict(groups or {})
    out = []
    for w in words:
        s = _parse_one(w, known)
        out.append(OODSource(s.name, s.dataset, s.path, groups.pop(w, None) or default_group(s.dataset, id_dataset),
                             s.eps))
    if len({s.slug for s in out}) != len(out):
        raise OODError(f"--ood {text!r} names a set twice; name each once")
    if groups:
        raise OODError(f"--group {next(iter(groups))}=...: that is not one of the --ood sets ({text})")
    return out


def parse_groups(items: list[str] | None) -> dict[str, str]:
    """['imagefolder:x=near', ...] (`--group SET=GROUP`, repeatable) -> {SET: GROUP}."""
    out: dict[str, str] = {}
    for item in items or []:
        name, eq, group = item.rpartition("=")
        if not eq or not name.strip() or not group.strip().replace("-", "").replace("_", "").isalnum():
            raise OODError(f"--group {item!r} must be SET=GROUP with a one-word group, e.g. --group "
                           "imagefolder:textures=far")
        out[name.strip()] = group.strip()
    return out


def convert_images(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C', H', W') = `shape`: channels repeated or averaged, then resized."""
    c, h, w = shape
    if x.shape[1] != c:
        if x.shape[1] == 1:
            x = x.expand(-1, c, -1, -1)  # grey -> colour: the same value in every channel
        elif c == 1:
            x = x.float().mean(dim=1, keepdim=True).round().to(torch.uint8)  # colour -> grey: channel mean
        else:
            raise OODError(f"cannot convert {x.shape[1]}-channel images to {c} channels; only grey <-> colour")
    if tuple(x.shape[2:]) != (h, w):
        shrink = x.shape[2] > h or x.shape[3] > w
        xf = F.interpolate(x.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
        x = xf.round().clamp(0, 255).to(torch.uint8)
    return x.contiguous()


def noise_images(n: int, shape: tuple[int, int, int], seed: int, stream: int = 17) -> torch.Tensor:
    """(n, C, H, W) uint8 uniform noise; seeded apart from the `noise` dataset's training stream. `stream` picks
    another sequence for the same seed (the ODIN validation noise uses one that no test noise uses)."""
    g = torch.Generator().manual_seed(1_000_003 * (seed + 1) + stream)
    return torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)


def gaussian_images(n: int, shape: tuple[int, int, int], seed: int, stream: int = 29) -> torch.Tensor:
    """(n, C, H, W) uint8: each pixel N(0.5, 1) clipped to [0, 1] (ODIN's "Gaussian" OOD set), then 8-bit.

    With a unit standard deviation about 31% of the pixels clip to black and 31% to white; that is the paper's set.
    """
    g = torch.Generator().manual_seed(1_000_003 * (seed + 1) + stream)
    x = (torch.randn((n, *shape), generator=g) + 0.5).clamp_(0, 1)
    return x.mul_(255).round_().to(torch.uint8)


def fgsm_images(model: nn.Module, data: ImageSet, eps: float, batch: int = 500) -> ImageSet:
    """`data` attacked by untargeted FGSM at `eps` against `model` (true labels), back to uint8 (eps = k/255 keeps
    every step exact), with the ID labels and classes."""
    from dla.attacks.fgsm import fgsm

    out = [fgsm(model, data.x[i: i + batch].float().div(255), data.y[i: i + batch], eps)
           for i in range(0, len(data), batch)]
    x = torch.cat(out).mul_(255).round_().clamp_(0, 255).to(torch.uint8) if out else data.x.clone()
    return ImageSet(x, data.y.clone(), data.classes)


@dataclass
class IDData:
    """What the OOD sets made from the run's own data need: its model and its ID images."""

    model: nn.Module | None = None  # fgsm attacks it
    test: ImageSet | None = None  # the ID test images scored (fgsm's test copies)
    val: ImageSet | None = None  # the ID validation split (fgsm's validation copies)
    heldout: ImageSet | None = None  # the left-out classes' test images (data.classes)


def load_registered(dataset: str, root: Path, shape: tuple[int, int, int], *, train: bool = False, path: str = "",
                    seed: int = 0) -> ImageSet:
    """A registered dataset's split, converted to `shape`. File-based sets are decoded at the ID size directly."""
    from dla.data.folder import has_test_split

    spec = get_dataset(dataset)
    ctx = LoadContext(root=root, name=dataset, image_size=shape[1] if shape[1] == shape[2] else 0,
                      channels=shape[0], path=path, seed=seed, workers=0)
    # An ImageFolder without a test/ (or val/) folder has only train/: all of it is OOD data here.
    split = train or (dataset == "imagefolder" and not has_test_split(ctx))
    data = spec.load(ctx, split)
    return ImageSet(convert_images(data.x, shape), data.y, data.classes)


def _synthetic(source: OODSource, n: int, shape: tuple[int, int, int], seed: int, validation: bool) -> ImageSet:
    make, test_stream, val_stream = SYNTHETIC[source.dataset]
    x = make(n, shape, seed, val_stream if validation else test_stream)
    return ImageSet(x, torch.zeros(n, dtype=torch.int64), [source.dataset])


def _attacked(source: OODSource, data: ImageSet | None, run: IDData, n: int) -> ImageSet:
    """The first n (0 = all) of `data` attacked with FGSM at the source's eps."""
    if run.model is None or data is None:
        raise OODError(f"--ood {source.name} attacks the run's own ID images; it needs the run's model and splits")
    return fgsm_images(run.model, data.subset(torch.arange(min(n or len(data), len(data)))), source.eps)


def load_ood_set(source: OODSource, root: Path, shape: tuple[int, int, int], limit: int, seed: int,
                 run: IDData | None = None) -> ImageSet:
    """The first `limit` images (0 = all) of an OOD set, as uint8 images of the ID shape."""
    run = run or IDData()
    if source.dataset in SYNTHETIC:
        return _synthetic(source, limit or 2000, shape, seed, validation=False)
    if source.dataset == "fgsm":  # copies of the ID test images scored, so the same `limit`
        return _attacked(source, run.test, run, limit)
    if source.dataset == "heldout":
        if run.heldout is None or len(run.heldout) == 0:
            raise OODError("--ood heldout needs a run trained on some classes only (data.classes=[...], e.g. the "
                           "cnn_mnist_heldout experiment); this run kept every class")
        data = run.heldout
    else:  # a dataset's test split (tiny_imagenet: its unlabelled test images)
        data = load_registered(source.dataset, root, shape, path=source.path, seed=seed)
    if limit:
        data = data.subset(torch.arange(min(limit, len(data))))
    return data


# Synthetic sets: (generator, test stream, validation stream). The ODIN validation streams are never a test stream.
SYNTHETIC = {"noise": (noise_images, 17, 424_243), "gaussian": (gaussian_images, 29, 424_259)}


VALIDATION_KIND = {"noise": "another noise stream", "gaussian": "another noise stream",
                   "heldout": "the held-out classes' train images", "fgsm": "FGSM on the ID val images",
                   "tiny_imagenet": "its val images"}


def validation_kind(source: OODSource) -> str:
    """Which images `load_validation_set` gives for `source`, in words (for captions)."""
    return VALIDATION_KIND.get(source.dataset, "its train split")


def load_validation_set(source: OODSource, root: Path, shape: tuple[int, int, int], limit: int, seed: int, *,
                        id_dataset: str, id_classes: list[int], test_sources: list[OODSource],
                        run: IDData | None = None) -> ImageSet:
    """OOD *validation* images for `source`, disjoint from every test image `load_ood_set` gives:

    - a registered dataset: its train split (the test sets are test splits; tiny_imagenet: its val images);
    - noise, gaussian: another seeded stream than the test one;
    - heldout: the *training* images of the classes the run left out (the test set holds their test images);
    - fgsm: attacked copies of the run's ID *validation* images (the test set attacks its test images).
    An ImageFolder without a test/ folder has no images apart from the test OOD ones: refused when also tested.
    """
    n = limit or 2000
    run = run or IDData()
    if source.dataset in SYNTHETIC:
        return _synthetic(source, n, shape, seed, validation=True)
    if source.dataset == "fgsm":
        return _attacked(source, run.val, run, n)
    if source.dataset == "heldout":
        if not id_classes:
            raise OODError("--odin-val heldout needs a run trained on some classes only (data.classes=[...], e.g. "
                           "cnn_mnist_heldout); this run kept every class")
        full = load_registered(id_dataset, root, shape, train=True, seed=seed)
        data = full.subset(torch.nonzero(~torch.isin(full.y, torch.tensor(id_classes))).flatten())
    else:
        _check_validation_dataset(source, root, shape, seed, id_dataset, test_sources)
        data = load_registered(source.dataset, root, shape, train=True, path=source.path, seed=seed)
    return data.subset(torch.arange(min(n, len(data))))


def _check_validation_dataset(source: OODSource, root: Path, shape: tuple[int, int, int], seed: int,
                              id_dataset: str, test_sources: list[OODSource]) -> None:
    from dla.data.folder import has_test_split

    if source.dataset == id_dataset and not source.path:
        raise OODError(f"--odin-val {source.name!r} is the run's own dataset (the ID data); pick an OOD set such "
                       "as noise or fashion_mnist")
    if source.dataset == "imagefolder":
        ctx = LoadContext(root=root, name="imagefolder", image_size=shape[1], channels=shape[0], path=source.path,
                          seed=seed, workers=0)
        if not has_test_split(ctx) and any(t.slug == source.slug for t in test_sources):
            raise OODError(f"--odin-val {source.name!r}: that folder has no test/ split, so all of its images "
                           "are the test OOD set; tune on another set (e.g. noise)")
