"""ResNet-18 with torchvision's state-dict names: pretrained loading, head / full fine-tuning, unsafe files, offline.

No torchvision here (not a dependency): "torchvision's weights" are stood in for by a randomly initialised model's
state_dict saved in torchvision's format, whose key list is written out below from the published architecture.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dla.config import OptimConfig, load_config
from dla.errors import CheckpointError, DataError
from dla.models import ModelInputs, build_model
from dla.models import resnet as resnet_module
from dla.models.resnet import IMAGENET_MEAN, IMAGENET_STD, ResNet18, ResNet18Config
from dla.train import run_experiment
from dla.train.optim import build_optimizer

from ..conftest import PickleBomb
from ..data.conftest import LoopbackServer, http_server, online  # noqa: F401  (fixtures)

CIFAR = ModelInputs((3, 32, 32), 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
IMAGENET = ModelInputs((3, 32, 32), 1000, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def torchvision_keys() -> list[str]:
    """torchvision.models.resnet18().state_dict().keys(), in order, from the published architecture."""
    def bn(p: str) -> list[str]:
        return [f"{p}.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]

    keys = ["conv1.weight", *bn("bn1")]
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}"
            keys += [f"{p}.conv1.weight", *bn(f"{p}.bn1"), f"{p}.conv2.weight", *bn(f"{p}.bn2")]
            if layer > 1 and block == 0:  # stride-2 blocks project their shortcut with a 1x1 conv + BN
                keys += [f"{p}.downsample.0.weight", *bn(f"{p}.downsample.1")]
    return [*keys, "fc.weight", "fc.bias"]


@pytest.fixture
def weights_file(tmp_path: Path) -> Path:
    """A 'published' ResNet-18 file: a random 1000-class model's weights in torchvision's format (raw state_dict)."""
    torch.manual_seed(123)
    model = build_model(ResNet18Config(), IMAGENET)
    with torch.no_grad():  # non-trivial BN statistics, so that loading them is visible
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(7)
    path = tmp_path / "resnet18-test.pth"
    torch.save(model.torchvision_state_dict(), path)
    return path


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, so a real cached copy on this machine cannot stand in for the one under test."""
    path = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(path))
    return path


def test_the_architecture_is_torchvisions() -> None:
    model = build_model(ResNet18Config(), IMAGENET)
    state = model.torchvision_state_dict()
    assert list(state) == torchvision_keys() and len(state) == 122
    assert "layer4.1.bn2.running_var" in state and "layer2.0.downsample.1.num_batches_tracked" in state
    assert sum(p.numel() for p in model.parameters()) == 11_689_512  # torchvision's resnet18: 11.7M
    assert state["conv1.weight"].shape == (64, 3, 7, 7) and state["fc.weight"].shape == (1000, 512)
    # Our Normalize is the only addition to the state dict.
    assert set(model.state_dict()) - set(state) == {"normalize.mean", "normalize.std"}


def test_pretrained_weights_load_and_fc_is_fresh_for_10_classes(weights_file: Path) -> None:
    published = torch.load(weights_file, weights_only=True)
    torch.manual_seed(0)
    model = build_model(ResNet18Config(pretrained=str(weights_file)), CIFAR)
    own = model.torchvision_state_dict()
    for k in torchvision_keys()[:-2]:
        assert torch.equal(own[k], published[k]), k
    assert own["fc.weight"].shape == (10, 512)  # the ImageNet head does not fit: re-initialised, not loaded
    torch.manual_seed(0)
    fresh = build_model(ResNet18Config(), CIFAR)
    assert torch.equal(own["fc.weight"], fresh.fc.weight) and torch.equal(own["fc.bias"], fresh.fc.bias)
    # Pretrained weights expect ImageNet's normalisation; random ones the dataset's.
    assert model.normalize.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)
    assert model.normalize.std.flatten().tolist() == pytest.approx(IMAGENET_STD)
    assert fresh.normalize.mean.flatten().tolist() == pytest.approx(CIFAR.mean)
    # With 1000 classes the head is loaded too: the model computes what the published one does.
    full = build_model(ResNet18Config(pretrained=str(weights_file)), IMAGENET)
    assert torch.equal(full.fc.weight, published["fc.weight"])


def test_head_mode_trains_only_the_classifier(weights_file: Path) -> None:
    model = build_model(ResNet18Config(pretrained=str(weights_file), finetune="head"), CIFAR)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    full = build_model(ResNet18Config(pretrained=str(weights_file)), CIFAR)
    assert all(p.requires_grad for p in full.parameters())

    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_optimizer(model, OptimConfig(name="adamw", lr=0.01, weight_decay=0.05))
    model.train()  # what the loop does every epoch: the frozen BatchNorms must stay in eval mode
    assert model.training and not model.bn1.training and not model.layer3[1].bn2.training and model.fc.training
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    changed = sorted(k for k, v in model.state_dict().items() if not torch.equal(v, before[k]))
    assert changed == ["fc.bias", "fc.weight"]  # no weight, no running statistic, no batch counter moved
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("fc."))


def test_grey_images_and_resize_inside_the_model(weights_file: Path) -> None:
    grey = ModelInputs((1, 28, 28), 10, (0.2860,), (0.3530,))
    model = build_model(ResNet18Config(resize=64), grey).eval()
    assert model.normalize.mean.flatten().tolist() == pytest.approx([0.2860] * 3)
    x = torch.rand(2, 1, 28, 28)
    assert model.features(x).shape == (2, 512, 2, 2)  # 64 / 32
    with torch.no_grad():
        rgb = F.interpolate(x.expand(-1, 3, -1, -1), size=(64, 64), mode="bilinear", align_corners=False)
        torch.testing.assert_close(model(x), model(rgb))  # grey -> RGB, then the bilinear resize
    pretrained = build_model(ResNet18Config(pretrained=str(weights_file), resize=64), grey)
    assert pretrained(x).shape == (2, 10)


def test_a_bad_file_is_one_clear_error(tmp_path: Path, weights_file: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a torch file")
    cases = [
        (tmp_path / "nowhere.pth", r"no such file"),
        (garbage, r"not a readable weights file"),
    ]
    wrong = tmp_path / "mlp.pth"
    torch.save(build_model(load_config("mnist_mlp").model, CIFAR).state_dict(), wrong)
    cases.append((wrong, r"not a torchvision ResNet-18 state_dict: missing keys 120 .*unexpected keys"))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(weights_file.read_bytes()[:100_000])
    cases.append((truncated, r"not a readable weights file"))
    reshaped = tmp_path / "reshaped.pth"
    state = torch.load(weights_file, weights_only=True)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, reshaped)
    cases.append((reshaped, r"layer1\.0\.conv1\.weight has shape \(64, 64, 1, 1\), ResNet-18 has \(64, 64, 3, 3\)"))
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    cases.append((listed, r"is not a state_dict"))
    for path, message in cases:
        with pytest.raises(CheckpointError, match=message) as exc:
            build_model(ResNet18Config(pretrained=str(path)), CIFAR)
        assert "\n" not in str(exc.value), path


def test_a_pickle_bomb_is_refused_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bomb = tmp_path / "resnet18-f37072fd.pth"
    torch.save({"conv1.weight": PickleBomb(marker)}, bomb)
    with pytest.raises(CheckpointError, match=r"refused .*weights-only.*not loaded"):
        build_model(ResNet18Config(pretrained=str(bomb)), CIFAR)
    assert not marker.exists()


def test_torchvision_offline_and_missing_says_where_to_put_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_dir: Path) -> None:
    monkeypatch.setenv("DLA_DATA", str(tmp_path / "root"))
    with pytest.raises(DataError) as exc:
        build_model(ResNet18Config(pretrained="torchvision"), CIFAR)
    text = str(exc.value)
    expected = tmp_path / "root" / "weights" / "resnet18-f37072fd.pth"
    assert f"not at {expected} (offline" in text and resnet_module.TORCHVISION_URL in text and "\n" not in text
    assert not (tmp_path / "root").exists()  # nothing created by a failed offline attempt


def test_torchvision_weights_from_the_cache_are_hash_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_dir: Path, weights_file: Path) -> None:
    monkeypatch.setenv("DLA_DATA", str(tmp_path / "root"))
    cached = tmp_path / "root" / "weights" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(weights_file.read_bytes())
    # Not torchvision's file: its sha256 does not start with f37072fd.
    with pytest.raises(DataError, match=r"is not torchvision's resnet18-f37072fd\.pth: its sha256 starts"):
        build_model(ResNet18Config(pretrained="torchvision"), CIFAR)
    # Pretend it is (the published prefix is this file's): it loads.
    prefix = hashlib.sha256(cached.read_bytes()).hexdigest()[:8]
    monkeypatch.setattr(resnet_module, "TORCHVISION_SHA256_PREFIX", prefix)
    model = build_model(ResNet18Config(pretrained="torchvision"), CIFAR)
    assert torch.equal(model.conv1.weight, torch.load(weights_file, weights_only=True)["conv1.weight"])
    # torch hub's own cache is used when the data root has no copy.
    cached.unlink()
    (hub_dir / "checkpoints").mkdir(parents=True)
    (hub_dir / "checkpoints" / "resnet18-f37072fd.pth").write_bytes(weights_file.read_bytes())
    assert isinstance(build_model(ResNet18Config(pretrained="torchvision"), CIFAR), ResNet18)


def test_torchvision_weights_are_downloaded_when_online(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_dir: Path, weights_file: Path,
        http_server: LoopbackServer, online: None) -> None:  # noqa: F811
    monkeypatch.setenv("DLA_DATA", str(tmp_path / "root"))
    (http_server.root / "resnet18-f37072fd.pth").write_bytes(weights_file.read_bytes())
    monkeypatch.setattr(resnet_module, "TORCHVISION_URL", http_server.url("resnet18-f37072fd.pth"))
    monkeypatch.setattr(resnet_module, "TORCHVISION_SHA256_PREFIX", "00000000")  # a wrong hash: nothing kept
    with pytest.raises(DataError, match="sha256 starts"):
        build_model(ResNet18Config(pretrained="torchvision"), CIFAR)
    weights = tmp_path / "root" / "weights"
    assert [p.name for p in weights.iterdir()] == []
    monkeypatch.setattr(resnet_module, "TORCHVISION_SHA256_PREFIX",
                        hashlib.sha256(weights_file.read_bytes()).hexdigest()[:8])
    model = build_model(ResNet18Config(pretrained="torchvision"), CIFAR)
    assert [p.name for p in weights.iterdir()] == ["resnet18-f37072fd.pth"]
    assert torch.equal(model.layer4[1].bn2.running_var, torch.load(weights_file, weights_only=True)[
        "layer4.1.bn2.running_var"])


def write_folder(root: Path, classes: int = 3, per_class: int = 6) -> None:
    rng = np.random.default_rng(0)
    for c in range(classes):
        for i in range(per_class):
            path = root / "train" / f"class{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)


@pytest.mark.parametrize("finetune", ["head", "full"])
def test_the_finetune_experiment_runs_from_a_local_file(tmp_path: Path, weights_file: Path, finetune: str) -> None:
    write_folder(tmp_path / "data" / "tiny")
    cfg = load_config("resnet18_finetune", [
        "data.path=tiny", "data.val_size=3", "data.batch_size=5", "data.workers=0", f"model.pretrained={weights_file}",
        f"model.finetune={finetune}", "model.resize=0", "train.epochs=1", "tracking.progress=off",
        "tracking.tensorboard=false"])
    run = run_experiment(cfg, tmp_path / "runs", tmp_path / "data")
    res = json.loads(run.results.read_text())
    assert res["model"] == "resnet18" and res["classes"] == ["class0", "class1", "class2"]
    best = torch.load(run.best, weights_only=True)["model"]
    published = torch.load(weights_file, weights_only=True)
    frozen = torch.equal(best["layer2.0.conv1.weight"], published["layer2.0.conv1.weight"])
    assert frozen == (finetune == "head")
    assert torch.equal(best["bn1.running_mean"], published["bn1.running_mean"]) == (finetune == "head")
    # A finished run's checkpoint is a valid starting point too (its weights, Normalize left out).
    again = build_model(ResNet18Config(pretrained=str(run.best)), ModelInputs((3, 32, 32), 3, (0.5,) * 3, (0.2,) * 3))
    assert torch.equal(again.layer2[0].conv1.weight, best["layer2.0.conv1.weight"])
    assert torch.equal(again.fc.weight, best["fc.weight"])  # 3 classes on both sides: the head is loaded as well
