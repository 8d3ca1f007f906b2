"""OOD image sets brought to the in-distribution (ID) shape: registered datasets, seeded noise, held-out classes.

A classifier only accepts images of its own shape, so every OOD set is converted to the ID (C, H, W):

- channels: grey -> colour repeats the grey channel; colour -> grey averages the channels (equal weights, not a
  luminance formula: the point is a valid input, and the mean keeps the pixel range); other counts are refused;
- size: `F.interpolate` (bilinear, antialiased when shrinking, on float pixels, rounded back to uint8) when the
  sizes differ. Images stay uint8 in [0, 255] until they are scored.

OOD set names (`dla ood --ood a,b`):
- a registered dataset (`dla list --datasets`): its *test* split, e.g. `fashion_mnist`, `mnist`, `svhn`;
- `imagefolder:PATH`: an ImageFolder tree (PATH under the data root, or absolute), its test split or, without
  one, all its images;
- `noise`: uniform noise of the ID shape, seeded (`--seed`), never the training noise;
- `heldout`: the test images of the classes the run was trained without (`data.classes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from dla.data.registry import ImageSet, LoadContext, dataset_names, get_dataset
from dla.ood.metrics import OODError

SPECIAL = ("noise", "heldout")


@dataclass(frozen=True)
class OODSource:
    """A parsed OOD set name: a registered dataset (with an ImageFolder path) or one of `SPECIAL`."""

    name: str  # as the user wrote it; names the output folder (made safe by `slug`)
    dataset: str  # registered dataset, or "noise" / "heldout"
    path: str = ""  # imagefolder only

    @property
    def slug(self) -> str:
        """A plain folder name for this set's plots: 'imagefolder:cifar10_sample' -> 'imagefolder-cifar10_sample'."""
        return "".join(c if c.isalnum() or c in "._-" else "-" for c in self.name).strip("-.") or "ood"


def parse_sources(text: str) -> list[OODSource]:
    """'fashion_mnist,noise,imagefolder:cifar10_sample' -> sources, checked against the dataset registry."""
    words = [w.strip() for w in text.split(",")]
    if not text.strip() or not all(words):
        raise OODError(f"--ood {text!r} has an empty name; give a comma list such as fashion_mnist,noise")
    known = [n for n in dataset_names() if n != "noise"]
    out: list[OODSource] = []
    for w in words:
        name, _, path = w.partition(":")
        if name in SPECIAL and not path:
            out.append(OODSource(w, name))
        elif name == "imagefolder":
            if not path:
                raise OODError("--ood imagefolder needs a folder: imagefolder:PATH (under the data root, or absolute)")
            out.append(OODSource(w, name, path))
        elif name in known and not path:
            out.append(OODSource(w, name))
        else:
            raise OODError(f"unknown OOD set {w!r}; use a dataset ({', '.join(known)}), imagefolder:PATH, noise, "
                           "or heldout (the classes a data.classes run left out)")
    if len({s.slug for s in out}) != len(out):
        raise OODError(f"--ood {text!r} names a set twice; name each once")
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


def load_ood_set(source: OODSource, root: Path, shape: tuple[int, int, int], limit: int, seed: int,
                 heldout: ImageSet | None) -> ImageSet:
    """The first `limit` images (0 = all) of an OOD set, as uint8 images of the ID shape."""
    if source.dataset == "noise":
        n = limit or 2000
        return ImageSet(noise_images(n, shape, seed), torch.zeros(n, dtype=torch.int64), ["noise"])
    if source.dataset == "heldout":
        if heldout is None or len(heldout) == 0:
            raise OODError("--ood heldout needs a run trained on some classes only (data.classes=[...], e.g. the "
                           "cnn_mnist_heldout experiment); this run kept every class")
        data = heldout
    else:
        data = load_registered(source.dataset, root, shape, path=source.path, seed=seed)
    if limit:
        data = data.subset(torch.arange(min(limit, len(data))))
    return data


VALIDATION_NOISE_STREAM = 424_243  # the ODIN validation noise: never the test noise (stream 17) of any seed


def load_validation_set(source: OODSource, root: Path, shape: tuple[int, int, int], limit: int, seed: int, *,
                        id_dataset: str, id_classes: list[int], test_sources: list[OODSource]) -> ImageSet:
    """OOD *validation* images for `source`, disjoint from every test image `load_ood_set` gives:

    - a registered dataset: its train split (the test sets are test splits);
    - noise: another seeded stream than the test noise;
    - heldout: the *training* images of the classes the run left out (the test set holds their test images).
    An ImageFolder without a test/ folder has no images apart from the test OOD ones: refused when also tested.
    """
    from dla.data.folder import has_test_split

    n = limit or 2000
    if source.dataset == "noise":
        return ImageSet(noise_images(n, shape, seed, VALIDATION_NOISE_STREAM), torch.zeros(n, dtype=torch.int64),
                        ["noise"])
    if source.dataset == "heldout":
        if not id_classes:
            raise OODError("--odin-val heldout needs a run trained on some classes only (data.classes=[...], e.g. "
                           "cnn_mnist_heldout); this run kept every class")
        full = load_registered(id_dataset, root, shape, train=True, seed=seed)
        data = full.subset(torch.nonzero(~torch.isin(full.y, torch.tensor(id_classes))).flatten())
    else:
        if source.dataset == id_dataset and not source.path:
            raise OODError(f"--odin-val {source.name!r} is the run's own dataset (the ID data); pick an OOD set such "
                           "as noise or fashion_mnist")
        if source.dataset == "imagefolder":
            ctx = LoadContext(root=root, name="imagefolder", image_size=shape[1], channels=shape[0], path=source.path,
                       seed=seed, workers=0)
            if not has_test_split(ctx) and any(t.slug == source.slug for t in test_sources):
                raise OODError(f"--odin-val {source.name!r}: that folder has no test/ split, so all of its images "
                               "are the test OOD set; tune on another set (e.g. noise)")
        data = load_registered(source.dataset, root, shape, train=True, path=source.path, seed=seed)
    return data.subset(torch.arange(min(n, len(data))))
