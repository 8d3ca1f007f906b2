"""MiniPlaces on a small generated folder in its layout: images/ + train.txt / val.txt, top-5 end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dla.config import DataConfig, load_config
from dla.data import get_dataset, load_splits
from dla.data.files import DataError
from dla.data.registry import LoadContext
from dla.train import run_experiment
from dla.train.metrics import topk_correct
from dla.train.restore import load_trained

CLASSES = 12
NAMES = [f"{chr(ord('a') + c)}/scene{c}" for c in range(CLASSES)]  # categories.txt: '/a/scene0 0', ...


def make_miniplaces(root: Path, *, per_class: int = 3, categories: bool = True) -> Path:
    """12 classes x `per_class` training images (40x30, random pixels; PNG and JPEG) and 1 val image per class."""
    rng = np.random.default_rng(0)
    images = root / "images"
    train_lines, val_lines = [], []
    for c in range(CLASSES):
        for i in range(per_class):
            rel = f"train/{NAMES[c]}/{i:08d}.{'jpg' if i % 2 else 'png'}"
            save(images / rel, rng)
            train_lines.append(f"{rel} {c}")
        rel = f"val/{c:08d}.png"
        save(images / rel, rng)
        val_lines.append(f"{rel} {c}")
    (root / "train.txt").write_text("\n".join(train_lines) + "\n")
    (root / "val.txt").write_text("\n".join(val_lines) + "\n")
    if categories:
        (root / "categories.txt").write_text("".join(f"/{n} {c}\n" for c, n in enumerate(NAMES)))
    return root


def save(path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)  # 40 wide, 30 high


def test_the_layout_loads_with_names_labels_and_resized_pixels(tmp_path: Path) -> None:
    make_miniplaces(tmp_path / "miniplaces")
    spec = get_dataset("miniplaces")
    ctx = LoadContext(root=tmp_path, name="miniplaces", image_size=16)  # found under the root's miniplaces/
    train, test = spec.load(ctx, True), spec.load(ctx, False)
    assert train.classes == [f"scene{c}" for c in range(CLASSES)] and test.classes == train.classes
    assert train.x.shape == (36, 3, 16, 16) and train.x.dtype == torch.uint8
    assert train.y.tolist() == [c for c in range(CLASSES) for _ in range(3)]
    assert test.x.shape == (12, 3, 16, 16) and test.y.tolist() == list(range(CLASSES))
    # Pixels as PIL decodes and resizes them (ImageFolder's decoder), JPEG included.
    for i, rel in ((0, "train/a/scene0/00000000.png"), (1, "train/a/scene0/00000001.jpg")):
        with Image.open(tmp_path / "miniplaces" / "images" / rel) as img:
            ref = np.asarray(img.convert("RGB").resize((16, 16), Image.BILINEAR)).transpose(2, 0, 1)
        assert np.array_equal(train.x[i].numpy(), ref)
    native = spec.load(LoadContext(root=tmp_path, name="miniplaces"), False)
    assert native.x.shape == (12, 3, 30, 40)  # (N, C, H, W) of 40x30 images


def test_splits_keep_val_txt_as_the_test_set(tmp_path: Path) -> None:
    make_miniplaces(tmp_path / "elsewhere", categories=False)
    s = load_splits(DataConfig(name="miniplaces", path=str(tmp_path / "elsewhere"), image_size=8, val_size=6,
                               workers=0), Path("/nonexistent"), seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (30, 6, 12)
    assert s.classes == [f"class_{c:02d}" for c in range(CLASSES)]  # no categories.txt
    assert s.test.y.tolist() == list(range(CLASSES))
    assert len(s.mean) == 3  # statistics of the training images


def test_lists_in_the_development_kit_folder(tmp_path: Path) -> None:
    root = make_miniplaces(tmp_path / "miniplaces")
    kit = root / "development_kit" / "data"
    kit.mkdir(parents=True)
    for name in ("train.txt", "val.txt", "categories.txt"):
        (root / name).rename(kit / name)
    test = get_dataset("miniplaces").load(LoadContext(root=tmp_path, name="miniplaces", image_size=8), False)
    assert len(test) == 12 and test.classes[3] == "scene3"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: (r / "train.txt").write_text("train/a/scene0/00000000.png 0\nno-label-here\n"),
     r"train\.txt line 2: expected 'relative/path\.jpg label'.*got 'no-label-here'"),
    (lambda r: (r / "train.txt").write_text("train/a/scene0/00000000.png zero\n"),
     r"train\.txt line 1: expected 'relative/path\.jpg label'"),
    (lambda r: (r / "train.txt").write_text("train/a/scene0/00000000.png 0\n\ntrain/a/scene0/gone.png 0\n"),
     r"train\.txt line 3 names .*gone\.png, which does not exist \(1 of 2 listed images are missing\)"),
    (lambda r: (r / "train.txt").write_text("../../etc/passwd 0\n"),
     r"train\.txt line 1: '\.\./\.\./etc/passwd' must be a path inside"),
    (lambda r: (r / "train.txt").write_text("train/a/scene0/00000000.png -1\n"),
     r"line 1: label -1 is negative"),
    (lambda r: (r / "train.txt").write_text(""), r"train\.txt lists no images"),
    (lambda r: (r / "val.txt").write_text("val/00000000.png 0\nval/00000001.png 12\n"),
     r"val\.txt line 2: label 12, but there are only 12 classes \(0 to 11, from categories\.txt\)"),
    (lambda r: (r / "val.txt").unlink(), r"has train\.txt but no val\.txt"),
    (lambda r: (r / "categories.txt").write_text("/a/scene0 0\n/b/scene1 2\n"),
     r"categories\.txt must number its categories 0 to N-1"),
])
def test_malformed_folders_are_one_clear_error(tmp_path: Path, edit, message: str) -> None:
    root = make_miniplaces(tmp_path / "miniplaces")
    edit(root)
    spec = get_dataset("miniplaces")
    ctx = LoadContext(root=tmp_path, name="miniplaces", image_size=8)
    with pytest.raises(DataError, match=message) as exc:
        spec.load(ctx, True)
        spec.load(ctx, False)
    assert "\n" not in str(exc.value)


def test_a_missing_dataset_says_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataset 'miniplaces' not found at .*miniplaces: expected .*images/ and "
                                        r".*train\.txt, val\.txt.*miniplaces\.csail\.mit\.edu") as exc:
        get_dataset("miniplaces").load(LoadContext(root=tmp_path, name="miniplaces"), True)
    assert "\n" not in str(exc.value)


def test_scenes_simplenet_runs_end_to_end_with_top5(tmp_path: Path) -> None:
    make_miniplaces(tmp_path / "data" / "miniplaces")
    cfg = load_config("scenes_simplenet", ["data.image_size=32", "data.val_size=6", "data.batch_size=10",
                                           "data.workers=0", "train.epochs=1", "tracking.progress=off",
                                           "tracking.tensorboard=false"])
    assert cfg.data.name == "miniplaces" and cfg.model.name == "simplenet"
    run = run_experiment(cfg, tmp_path / "runs", tmp_path / "data")
    res = json.loads(run.results.read_text())
    assert res["dataset"] == "miniplaces" and len(res["classes"]) == CLASSES
    assert "top5" in res["test"] and "top5" in res["val"]
    # Top-5 recomputed by hand from the best checkpoint's logits on the test split (val.txt).
    trained = load_trained(run.path, tmp_path / "data")
    with torch.no_grad():
        logits = trained.model(trained.splits.test.x.float() / 255)  # (12, 12)
    y = trained.splits.test.y
    manual = sum(int(y[i]) in logits[i].topk(5).indices.tolist() for i in range(len(y))) / len(y)
    assert res["test"]["top5"] == pytest.approx(manual)
    assert topk_correct(logits, y, 5) == round(manual * len(y))
    assert res["test"]["top5"] >= res["test"]["accuracy"]
    assert "| Top-5 |" in run.summary.read_text()  # the run's table shows it too
