"""Near / far / adversarial groups, their mean rows, inverted scores, and the OOD sets made for CIFAR-10 models."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dla.attacks.fgsm import fgsm
from dla.data import ImageSet
from dla.ood import OODError
from dla.ood.data import (
    IDData,
    default_group,
    fgsm_images,
    gaussian_images,
    load_ood_set,
    load_validation_set,
    parse_groups,
    parse_sources,
)
from dla.ood.tables import FOOTNOTE, INVERTED_AUROC, Row, groups_json, ood_table, sweep_table, table_rows

from ..conftest import DATA_ROOT, TINY_SHAPE, needs_mnist, tiny_classifier

KEYS = ("auroc", "aupr_in", "aupr_out", "fpr95")


def _m(auroc: float, aupr_in: float, aupr_out: float, fpr95: float) -> dict[str, float]:
    return dict(zip(KEYS, (auroc, aupr_in, aupr_out, fpr95), strict=True))


# A CIFAR-10 run's table, by hand: two near sets, three far sets (noise inverted), one adversarial set.
SETS = {
    ("near", "tiny_imagenet"): {"msp": _m(0.80, 0.75, 0.82, 0.60), "energy": _m(0.84, 0.80, 0.86, 0.55)},
    ("near", "cifar100"): {"msp": _m(0.86, 0.84, 0.85, 0.50), "energy": _m(0.88, 0.85, 0.89, 0.45)},
    ("far", "mnist"): {"msp": _m(0.95, 0.96, 0.93, 0.20), "energy": _m(0.99, 0.99, 0.98, 0.05)},
    ("far", "noise"): {"msp": _m(0.30, 0.35, 0.40, 1.00), "energy": _m(0.40, 0.42, 0.45, 0.98)},
    ("far", "svhn"): {"msp": _m(0.91, 0.88, 0.93, 0.35), "energy": _m(0.93, 0.90, 0.95, 0.30)},
    ("adversarial", "fgsm:8/255"): {"msp": _m(0.55, 0.50, 0.60, 0.90), "energy": _m(0.4001, 0.5, 0.5, 0.9)},
}


def _rows(order: list[tuple[str, str]] | None = None) -> list[Row]:
    return [Row(g, s, m, m, v) for (g, s) in (order or list(SETS)) for m, v in SETS[(g, s)].items()]


def _cells(table: str) -> dict[tuple[str, str, str], list[str]]:
    out = {}
    for line in table.splitlines():
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(c) == 7 and c[0] != "group":
            out[(c[0], c[1], c[2])] = c[3:]
    return out


def test_group_means_equal_the_hand_computed_means() -> None:
    # the far sets first and mixed with near ones: the table still goes near, far, adversarial
    order = [("far", "mnist"), ("near", "tiny_imagenet"), ("adversarial", "fgsm:8/255"), ("far", "noise"),
             ("near", "cifar100"), ("far", "svhn")]
    table = ood_table(_rows(order), "caption")
    cells = _cells(table)
    for group, sets in (("near", ["tiny_imagenet", "cifar100"]), ("far", ["mnist", "noise", "svhn"])):
        for method in ("msp", "energy"):
            hand = [statistics.fmean(SETS[(group, s)][method][k] for s in sets) for k in KEYS]
            name = f"mean of {len(sets)} sets" + (" (1 inverted)" if group == "far" else "")  # noise, both methods
            got = cells[(group, name, method)]
            assert [float(c.replace("†", "")) for c in got] == pytest.approx(hand, abs=5e-5), (group, method)
            js = groups_json(_rows(order))[group]
            assert js["sets"] == sets
            assert [js["methods"][method][k] for k in KEYS] == pytest.approx(hand, abs=1e-12)
    # far/msp: (0.95 + 0.30 + 0.91) / 3 = 0.72, printed as an ordinary mean that names its inverted set
    assert cells[("far", "mean of 3 sets (1 inverted)", "msp")][0] == "0.7200"
    assert groups_json(_rows(order))["far"]["methods"]["msp"]["inverted_sets"] == ["noise"]
    # order: near sets, near means, far sets, far means, the adversarial set and its mean (one set: the same)
    groups = [k[0] for k in cells]
    assert groups == sorted(groups, key=["near", "far", "adversarial"].index)
    assert [k[1] for k in cells if k[0] == "near"] == ["tiny_imagenet"] * 2 + ["cifar100"] * 2 + ["mean of 2 sets"] * 2
    adv = [k for k in cells if k[0] == "adversarial"]
    assert [k[1] for k in adv] == ["fgsm:8/255"] * 2 + ["mean of 1 set"] * 2
    assert cells[adv[0]] == cells[adv[2]] and cells[adv[1]] == cells[adv[3]]
    assert groups_json(_rows(order))["adversarial"]["sets"] == ["fgsm:8/255"]


def test_an_inverted_score_is_marked_and_footnoted_not_printed_as_a_number() -> None:
    assert INVERTED_AUROC == 0.4
    cells = _cells(ood_table(_rows(), "caption"))
    assert cells[("far", "noise", "msp")][0] == "0.3000 †"  # AUROC 0.30: ranks noise above the ID images
    assert cells[("far", "noise", "energy")][0] == "0.4000 †"  # the threshold itself counts as inverted
    assert cells[("adversarial", "fgsm:8/255", "energy")][0] == "0.4001"  # just above: an ordinary (poor) number
    assert cells[("far", "mnist", "msp")][0] == "0.9500"
    table = ood_table(_rows(), "caption")
    assert table.rstrip().endswith(FOOTNOTE) and "inverted: this score ranks OOD above ID" in FOOTNOTE
    clean = ood_table([r for r in _rows() if not r.inverted], "caption")
    assert "†" not in clean and "inverted" not in clean
    js = groups_json(_rows())
    assert js["far"]["methods"]["energy"]["inverted"] is False  # (0.99 + 0.40 + 0.93) / 3 is not inverted


def test_the_sweep_table_is_mean_and_sample_std_of_each_row_over_runs() -> None:
    a, b = table_rows(_rows()), table_rows(_rows())
    for r in b:  # a second run: every AUROC 0.02 higher
        r.metrics = {**r.metrics, "auroc": r.metrics["auroc"] + 0.02}
    b = table_rows([r for r in b if not r.members])
    text = sweep_table([("all", [a, b])], "caption")
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:4]): line for line in text.splitlines()
            if line.startswith("| all |")}
    sd = statistics.stdev([0.80, 0.82])
    assert f"| 0.8100 ± {sd:.4f} | 0.7500 ± 0.0000 |" in rows[("all", "near", "tiny_imagenet", "msp")]
    mean_far = statistics.fmean([statistics.fmean([0.95, 0.30, 0.91]), statistics.fmean([0.97, 0.32, 0.93])])
    assert f"| {mean_far:.4f} ± {sd:.4f} |" in rows[("all", "far", "mean of 3 sets", "msp")]
    assert rows[("all", "far", "noise", "msp")].endswith("| 2 |")
    assert "0.3100 ± " in rows[("all", "far", "noise", "msp")] and "†" in rows[("all", "far", "noise", "msp")]


def test_groups_follow_the_id_benchmark_and_can_be_overridden() -> None:
    cifar = {s.name: s.group for s in parse_sources(
        "tiny_imagenet,cifar100,mnist,fashion_mnist,svhn,noise,gaussian,fgsm,imagefolder:x", "cifar10")}
    assert cifar == {"tiny_imagenet": "near", "cifar100": "near", "mnist": "far", "fashion_mnist": "far",
                     "svhn": "far", "noise": "far", "gaussian": "far", "fgsm": "adversarial",
                     "imagefolder:x": "other"}
    assert default_group("tiny_imagenet", "cifar10_jpeg") == "near"  # the JPEG copy is the same benchmark
    mnist = {s.name: s.group for s in parse_sources("fashion_mnist,tiny_imagenet,heldout", "mnist")}
    assert mnist == {"fashion_mnist": "near", "tiny_imagenet": "far", "heldout": "near"}
    over = parse_sources("imagefolder:x,noise", "cifar10", parse_groups(["imagefolder:x=far", "noise=synthetic"]))
    assert [s.group for s in over] == ["far", "synthetic"]
    with pytest.raises(OODError, match=r"--group svhn=\.\.\.: that is not one of the --ood sets"):
        parse_sources("noise", "cifar10", {"svhn": "far"})
    for bad in ("noise", "=far", "noise=two words"):
        with pytest.raises(OODError, match="must be SET=GROUP"):
            parse_groups([bad])


def test_fgsm_eps_is_a_whole_number_of_grey_levels() -> None:
    assert parse_sources("fgsm")[0].eps == 8 / 255
    (a, b) = parse_sources("fgsm:2/255,fgsm:0.0039215686")
    assert a.eps == 2 / 255 and b.eps == pytest.approx(1 / 255) and a.slug == "fgsm-2-255"
    for bad, needle in (("fgsm:0.03", "whole number of grey levels"), ("fgsm:0", "must be > 0"),
                        ("fgsm:2", "whole number of grey levels"), ("fgsm:x", "is not a number")):
        with pytest.raises(OODError, match=needle):
            parse_sources(bad)


def test_fgsm_set_is_the_id_images_attacked_exactly() -> None:
    model = tiny_classifier(seed=4)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (9, *TINY_SHAPE), generator=g, dtype=torch.uint8)
    data = ImageSet(x, torch.randint(0, 5, (9,), generator=g), [str(i) for i in range(5)])
    got = fgsm_images(model, data, 8 / 255, batch=4)  # several batches
    expected = fgsm(model, x.float() / 255, data.y, 8 / 255)
    assert got.x.dtype == torch.uint8 and torch.equal(got.y, data.y) and got.classes == data.classes
    assert torch.equal(got.x, (expected * 255).round().to(torch.uint8))  # 8/255 steps land on grey levels
    assert (got.x.int() - x.int()).abs().max() == 8
    run = IDData(model, test=data, val=ImageSet(x.flip(0), data.y.flip(0), data.classes))
    (source,) = parse_sources("fgsm")
    test = load_ood_set(source, Path("unused"), TINY_SHAPE, 5, 0, run)
    assert torch.equal(test.x, got.x[:5])  # the first `limit` ID test images, attacked
    val = load_validation_set(source, Path("unused"), TINY_SHAPE, 5, 0, id_dataset="x", id_classes=[],
                              test_sources=[source], run=run)
    assert torch.equal(val.x, fgsm_images(model, run.val, 8 / 255).x[:5])  # validation: the ID val images
    with pytest.raises(OODError, match="attacks the run's own ID images"):
        load_ood_set(source, Path("unused"), TINY_SHAPE, 5, 0)


def test_gaussian_noise_is_odins_and_seeded_apart_from_validation() -> None:
    (source,) = parse_sources("gaussian")
    a = load_ood_set(source, Path("unused"), (3, 32, 32), 400, 0)
    assert a.x.shape == (400, 3, 32, 32) and a.x.dtype == torch.uint8 and a.classes == ["gaussian"]
    assert torch.equal(a.x, gaussian_images(400, (3, 32, 32), 0))
    assert not torch.equal(a.x, gaussian_images(400, (3, 32, 32), 1))
    # N(0.5, 1) clipped to [0, 1]: P(x <= 0) = P(x >= 1) = Phi(-0.5) = 0.3085; the mean stays 0.5
    for level in (0, 255):
        assert (a.x == level).float().mean().item() == pytest.approx(0.3085, abs=0.01)
    assert a.x.float().mean().item() / 255 == pytest.approx(0.5, abs=0.01)
    val = load_validation_set(source, Path("unused"), (3, 32, 32), 400, 0, id_dataset="cifar10", id_classes=[],
                              test_sources=[source])
    assert not torch.equal(val.x, a.x)
    flat = {bytes(r.numpy()) for r in a.x.flatten(1)}
    assert not any(bytes(r.numpy()) in flat for r in val.x.flatten(1))


@needs_mnist
def test_mnist_is_a_far_ood_set_for_a_colour_32x32_model() -> None:
    (source,) = parse_sources("mnist", "cifar10")
    assert source.group == "far"
    data = load_ood_set(source, DATA_ROOT, (3, 32, 32), 50, 0)
    assert data.x.shape == (50, 3, 32, 32) and data.x.dtype == torch.uint8
    assert torch.equal(data.x[:, 0], data.x[:, 1]) and torch.equal(data.x[:, 1], data.x[:, 2])  # grey, 3 channels
    grey = load_ood_set(source, DATA_ROOT, (1, 28, 28), 50, 0).x.float()
    up = F.interpolate(grey, size=(32, 32), mode="bilinear", align_corners=False).round().clamp(0, 255)
    assert torch.equal(data.x[:, :1].float(), up)  # bilinear, not antialiased: it is an enlargement
