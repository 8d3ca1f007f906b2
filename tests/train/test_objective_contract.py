"""Every registered training objective keeps the shared guarantees, each switched on by its own `example`
overrides, on a tiny MLP with BatchNorm and seeded in-memory images (no dataset file):

- the config that switches it on selects it, and the base config switches on no objective;
- its loss is a finite scalar, and gradients reach every weight of the model (finite everywhere), none of any
  module it holds besides the model (a teacher);
- a loss call moves the model's BatchNorm running statistics exactly `batchnorm_updates` times, leaves every
  module's mode as it found it and leaves the modules it holds untouched;
- the same seed and inputs give the same loss twice, and a 2-epoch run resumed after epoch 1 ends with the
  weights of an uninterrupted one;

and two objectives switched on at once are one `ConfigError` line, for built-in and added objectives alike.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from dla.config import ExperimentConfig, load_config
from dla.data import ImageSet, Splits
from dla.distributed import SINGLE
from dla.errors import ConfigError, DlaError
from dla.models import ModelInputs, build_model
from dla.runs import RunDir, write_config
from dla.train.checkpoint import save_checkpoint
from dla.train.loop import Trainer, fit_interruptibly, open_run_dir
from dla.train.objectives import FALLBACK, OBJECTIVES, Objective, build_criterion, select_objective

CPU = torch.device("cpu")
SHAPE, CLASSES = (1, 8, 8), ["a", "b", "c", "d"]
# data.name only names the data for the config's checks (a teacher's dataset, an auxiliary set that is not the
# training set); the images themselves are built in memory by `_splits`.
BASE = ["data.name=mnist", "data.batch_size=16", "data.augment.crop_padding=1", "model.width=16",
        "model.depth=2", "model.norm=batch", "model.dropout=0.1", "train.epochs=2", "train.label_smoothing=0.05",
        "train.early_stopping.patience=0", "train.amp_cpu=false", "tracking.progress=off",
        "tracking.tensorboard=false", "device=cpu"]
NAMES = OBJECTIVES.names()


def _splits(root: Path) -> Splits:
    g = torch.Generator().manual_seed(0)

    def part(n: int) -> ImageSet:
        x = torch.randint(0, 256, (n, *SHAPE), generator=g, dtype=torch.uint8)
        return ImageSet(x, torch.randint(0, len(CLASSES), (n,), generator=g), CLASSES)

    return Splits(train=part(64), val=part(32), test=part(32), spec=None, mean=(0.5,), std=(0.25,),  # type: ignore[arg-type]
                  root=root)


def _inputs(splits: Splits) -> ModelInputs:
    return ModelInputs(splits.input_shape, len(splits.classes), splits.mean, splits.std)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder on the same data: config.yaml and a best.pt of a (narrower) seeded MLP."""
    run = RunDir(tmp_path_factory.mktemp("teacher") / "run")
    run.checkpoints.mkdir(parents=True)
    tcfg = load_config("mnist_mlp", [*BASE, "model.width=8"])
    torch.manual_seed(5)
    model = build_model(tcfg.model, _inputs(_splits(run.path)))
    write_config(run, tcfg)
    save_checkpoint(run.best, {"model": model.state_dict(), "epoch": 1})
    return run.path


def _cfg(name: str, teacher: Path, *extra: str) -> ExperimentConfig:
    example = [o.format(teacher=teacher) for o in OBJECTIVES.get(name).example]
    return load_config("mnist_mlp", [*BASE, *example, *extra])


def _setup(name: str, teacher: Path, root: Path) -> tuple[nn.Module, Objective, Splits]:
    cfg, splits = _cfg(name, teacher), _splits(root)
    torch.manual_seed(0)
    model = build_model(cfg.model, _inputs(splits), training=True).train()
    return model, build_criterion(cfg, splits, CPU, model), splits


def _batch(splits: Splits) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(16, 1, 8, 8) images in [0, 1], their labels and their row indices, as the loop hands them over."""
    idx = torch.arange(3, 19)
    return splits.train.x[idx].float().div(255), splits.train.y[idx], idx


def _held(model: nn.Module, crit: Objective) -> list[nn.Module]:
    """The modules an objective holds besides the model being trained (a teacher)."""
    return [m for m in vars(crit).values() if isinstance(m, nn.Module) and m is not model]


@pytest.mark.parametrize("name", NAMES)
def test_its_example_selects_it_and_the_base_config_selects_none(name: str, teacher: Path) -> None:
    cls = OBJECTIVES.get(name)
    assert select_objective(_cfg(name, teacher)) is cls
    assert not cls.active(load_config("mnist_mlp", BASE))
    assert set(cls.conflicts) <= set(NAMES) - {name, FALLBACK}, "conflicts name other registered objectives"
    if name != FALLBACK:  # the settings its messages name
        assert cls.active(_cfg(name, teacher)) and cls.config and cls.key and cls.off and cls.example


@pytest.mark.parametrize("name", NAMES)
def test_the_loss_is_finite_and_reaches_every_weight(name: str, teacher: Path, tmp_path: Path) -> None:
    model, crit, splits = _setup(name, teacher, tmp_path)
    assert isinstance(crit, OBJECTIVES.get(name))
    held = _held(model, crit)
    x, y, idx = _batch(splits)
    loss = crit(model(x).float(), y, x, idx)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        if p.ndim >= 2:  # every weight matrix learns (a bias before BatchNorm has an exactly zero gradient)
            assert p.grad.abs().sum() > 0, n
    assert model.head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for m in held for p in m.parameters())


def _norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("name", NAMES)
def test_batchnorm_statistics_move_as_documented(name: str, teacher: Path, tmp_path: Path) -> None:
    model, crit, splits = _setup(name, teacher, tmp_path)
    x, y, idx = _batch(splits)
    logits = model(x).float()  # the caller's forward pass: one update, not the objective's
    stats = {n: b.clone() for n, b in model.named_buffers()}
    held = [copy.deepcopy(m.state_dict()) for m in _held(model, crit)]
    modes = [m.training for m in model.modules()]
    crit(logits, y, x, idx).backward()
    for m in _norms(model):
        assert int(m.num_batches_tracked) == 1 + crit.batchnorm_updates  # e.g. no attack step trained BatchNorm
        assert m.track_running_stats
    moved = [n for n, b in model.named_buffers() if not torch.equal(b, stats[n])]
    assert bool(moved) == (crit.batchnorm_updates > 0)
    assert [m.training for m in model.modules()] == modes
    for state, m in zip(held, _held(model, crit), strict=True):
        assert all(torch.equal(v, m.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize("name", NAMES)
def test_the_same_seed_gives_the_same_loss(name: str, teacher: Path, tmp_path: Path) -> None:
    losses = []
    for _ in range(2):
        model, crit, splits = _setup(name, teacher, tmp_path)
        x, y, idx = _batch(splits)
        torch.manual_seed(3)  # dropout, a PGD start, the auxiliary draw: all from the global RNG
        losses.append(crit(model(x).float(), y, x, idx))
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)


def _fit(cfg: ExperimentConfig, splits: Splits, out: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, _inputs(splits), training=True)
    trainer = Trainer(cfg, model, splits, CPU, open_run_dir(out, cfg, CPU, SINGLE), SINGLE)
    fit_interruptibly(trainer, "epoch")
    return model.state_dict()


@pytest.mark.parametrize("name", NAMES)
def test_a_run_resumed_after_epoch_one_ends_with_the_uninterrupted_weights(
        name: str, teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    splits = _splits(tmp_path)
    straight = _fit(_cfg(name, teacher, "run_name=straight"), splits, tmp_path)
    real = Trainer.train_one_epoch

    def ctrl_c_in_epoch_2(self: Trainer, epoch: int) -> dict[str, float]:
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, epoch)

    monkeypatch.setattr(Trainer, "train_one_epoch", ctrl_c_in_epoch_2)
    with pytest.raises(DlaError, match="interrupted"):
        _fit(_cfg(name, teacher, "run_name=cut"), splits, tmp_path)
    monkeypatch.setattr(Trainer, "train_one_epoch", real)
    torch.manual_seed(123)  # the resumed run's RNG comes from the checkpoint, not from where this process stands
    resumed = _fit(_cfg(name, teacher, "run_name=cut", "resume=true"), splits, tmp_path)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight), name


# ---------------------------------------------------------------------------------------------------------------
# Two objectives at once


class _Fake(Objective):
    """Switched on by run_name=fake*: an objective added to the registry for one test."""

    config, key, off = "fake.objective", "run_name", "''"

    @classmethod
    def active(cls, cfg: ExperimentConfig) -> bool:
        return cfg.run_name.startswith("fake")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[Objective]:
    """`_Fake` enrolled as "fake" with conflicts=("distillation",); monkeypatch removes the entry afterwards."""
    cls = type("FakeObjective", (_Fake,), {"name": "fake", "conflicts": ("distillation",)})
    monkeypatch.setitem(OBJECTIVES.entries, "fake", cls)
    return cls


def test_an_added_objective_that_conflicts_with_distillation_is_one_line(fake: type[Objective]) -> None:
    expected = ("distill.teacher and fake.objective are not supported together (each is a training objective); "
                "set distill.teacher='' or run_name=''")
    with pytest.raises(ConfigError) as info:
        load_config("mnist_mlp", ["run_name=fake1", "distill.teacher=somewhere"])
    assert str(info.value) == expected
    cfg = load_config("mnist_mlp", ["run_name=fake1"])
    assert select_objective(cfg) is fake
    cfg.distill.teacher = "somewhere"  # past validation: build_criterion refuses it the same way, before any build
    with pytest.raises(ConfigError) as info:
        build_criterion(cfg, None, CPU)  # type: ignore[arg-type]
    assert str(info.value) == expected


def test_two_objectives_without_a_declared_conflict_are_refused_too(fake: type[Objective]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("mnist_mlp", ["run_name=fake1", "train.adversarial.method=fgsm"])
    assert str(info.value) == ("train.adversarial and fake.objective are each a training objective and a run "
                               "trains one; set train.adversarial.method=none or run_name=''")


def test_the_fake_objective_is_gone_after_its_test() -> None:
    assert "fake" not in OBJECTIVES and OBJECTIVES.names() == NAMES
