"""The training loop: data -> model -> (train, validate, checkpoint) per epoch -> test the best weights.

Read `Trainer.fit` top to bottom: it is the algorithm. Everything it needs is built in `__init__`, and
everything a run leaves behind (plots, tables, results.json last of all) is written by `run_experiment`.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dla.config import ExperimentConfig, from_dict, read_yaml, to_dict
from dla.data import Splits, load_splits
from dla.data.loader import TensorLoader, augment
from dla.data.provenance import data_caption, data_provenance
from dla.distributed import (
    SINGLE,
    Dist,
    broadcast_buffers,
    broadcast_object,
    check_batch,
    device_for,
    gather_objects,
    init_from_env,
)
from dla.errors import DlaError, RunDirError
from dla.io import atomic_write
from dla.models import ModelInputs, build_model
from dla.report.gradflow import plot_run_gradflow
from dla.report.plots import plot_confusion, plot_curves
from dla.report.tables import runs_table
from dla.runs import RunDir, env_info, prepare_run_dir, results_record, write_config, write_json, write_results
from dla.runtime import pick_device, seed_everything
from dla.tracking import check_tracking, metrics_at, progress, read_metrics
from dla.train.callbacks import Callback, OverfittingGuard, gradflow_callbacks
from dla.train.checkpoint import load_checkpoint, position
from dla.train.early_stopping import EarlyStopping
from dla.train.engine import Engine
from dla.train.guard import AdversarialGuard
from dla.train.metrics import MetricAccumulator
from dla.train.objectives import Objective, build_criterion, select_objective
from dla.train.optim import build_optimizer, build_scheduler


class TrainingDiverged(DlaError):
    """The loss became NaN or infinite."""


class LossWatch:
    """Stops training at the first optimizer step whose loss is NaN or infinite, and names that step.

    On a CPU the check costs nothing, so every loss is checked before its backward pass and garbage never
    reaches the weights. On an accelerator reading a value back stalls the device's queue, so the losses are
    copied into a small on-device window (no synchronisation) and read back once every `every` steps and
    at the end of each epoch: a diverged run still stops before the epoch's checkpoint is written (the last
    good one on disk is untouched), and the message still names the first bad step exactly.
    """

    def __init__(self, device: torch.device, every: int | None = None) -> None:
        self.every = every or (1 if device.type == "cpu" else 32)
        self.losses = torch.zeros(self.every, device=device)  # (every,) the window's losses
        self.first_step = 0  # global optimizer step of losses[0]
        self.n = 0

    def add(self, step: int, loss: torch.Tensor) -> bool:
        """Record `loss` of global step `step` (counted from 1); True when the window is due a check."""
        if self.n == 0:
            self.first_step = step
        self.losses[self.n] = loss.detach().float()
        self.n += 1
        return self.n == self.every

    def first_bad(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> tuple[int, float] | None:
        """(step, loss) of the window's first non-finite loss on any rank, or None; empties the window."""
        n, self.n = self.n, 0
        if not n:
            return None
        losses = self.losses[:n].cpu()  # the one read-back per window
        bad = reduce((~torch.isfinite(losses)).float())  # summed over ranks: every rank decides alike
        hits = torch.nonzero(bad).flatten()
        if not len(hits):
            return None
        i = int(hits[0])
        return self.first_step + i, float(losses[i])  # this rank's value (finite if another rank went bad)


class DivergenceWatch(Callback):
    """Stops the epoch loop at the first non-finite training loss, before anything trained on it is saved."""

    def on_epoch_start(self, engine: Trainer, epoch: int) -> None:
        self.watch = LossWatch(engine.device)
        self.epoch, self.steps_done = epoch, (epoch - 1) * len(engine.train_loader)

    def on_loss(self, engine: Trainer, step: int, loss: torch.Tensor) -> None:
        if self.watch.add(step, loss):
            self.check(engine)

    def before_checkpoint(self, engine: Trainer, epoch: int) -> None:
        self.check(engine)  # a diverged step is never checkpointed

    def on_epoch_end(self, engine: Trainer, epoch: int) -> None:
        self.check(engine)  # the window's rest, before this epoch is saved

    def check(self, engine: Trainer) -> None:
        bad = self.watch.first_bad(engine.reduce)
        if bad is None:
            return
        step, value = bad
        shown = value if not math.isfinite(value) else "nan or inf on another rank"
        raise TrainingDiverged(
            f"training loss became {shown} at step {step} in epoch {self.epoch} (batch {step - self.steps_done} "
            f"of {len(engine.train_loader)}); stopped before anything trained on it was saved; the last good "
            f"checkpoint is {engine._last_good(self.epoch)}; lower optim.lr or set train.grad_clip")


def default_callbacks(trainer: Trainer) -> list[Callback]:
    """The optional behaviour a config asks for; the divergence watch is always on."""
    cfg = trainer.cfg.train
    out: list[Callback] = [DivergenceWatch()]
    if cfg.adversarial.guarded:  # FGSM training: stop at catastrophic overfitting (dla.train.guard)
        val = trainer.splits.val
        out.append(OverfittingGuard(AdversarialGuard(cfg.adversarial, val.x, val.y, trainer.cfg.seed)))
    return out + gradflow_callbacks(trainer)


class Trainer(Engine):
    def __init__(self, cfg: ExperimentConfig, model: nn.Module, splits: Splits, device: torch.device,
                 run: RunDir, dist: Dist = SINGLE, criterion: Objective | None = None,
                 callbacks: list[Callback] | None = None) -> None:
        self.cfg, self.model, self.splits, self.device, self.run, self.dist = cfg, model, splits, device, run, dist
        d = cfg.data
        # Every rank walks the same global batches and keeps its rows of each; evaluation sets are split
        # into strided shards, so each example is counted by exactly one rank.
        self.train_loader = TensorLoader(splits.train.x, splits.train.y, d.batch_size, shuffle=True,
                                         drop_last=True, seed=cfg.seed, device=device, rank=dist.rank,
                                         world=dist.world, with_index=True)
        self.val_loader = self.shard_loader(splits.val.x, splits.val.y)
        self.num_classes = len(splits.classes)
        # What the loop minimises: the config's objective (dla.train.objectives), cross-entropy by default.
        self.criterion = criterion or build_criterion(cfg, splits, device, model)
        self.optimizer = build_optimizer(model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, len(self.train_loader), cfg.train.epochs)
        self.stopper = EarlyStopping(cfg.train.early_stopping)
        self.setup(model, run, dist, device)
        self.callbacks = default_callbacks(self) if callbacks is None else callbacks
        self.start_epoch = 0
        self.partial: dict[str, Any] | None = None  # a mid-epoch checkpoint's place in its epoch (resume)
        if cfg.resume:
            self.start_epoch = self.restore(run.last)
        batch = self.partial["batch"] if self.partial else 0
        self.start(self.start_epoch, self.start_epoch * len(self.train_loader) + batch, 1_000_003 * batch)

    # ---------------------------------------------------------------------------------------------
    def fit(self) -> None:
        cfg = self.cfg.train
        metric = cfg.early_stopping.metric.split("/", 1)[1]
        if self.stopper.should_stop:  # resumed from a run that had already stopped early
            return
        for epoch in range(self.start_epoch + 1, cfg.epochs + 1):  # epochs count from 1
            # A mid-epoch checkpoint's epoch continues with its learning rate and seconds so far.
            self.epoch_lr = self.partial["lr"] if self.partial else self.optimizer.param_groups[0]["lr"]
            self.epoch_t0 = time.perf_counter() - (self.partial["seconds"] if self.partial else 0.0)
            train = self.train_one_epoch(epoch)
            val = self.evaluate(self.val_loader)
            self.emit("on_validate", epoch, val)
            seconds, lr = time.perf_counter() - self.epoch_t0, self.epoch_lr

            self.tracker.log(epoch, "train", train, lr=lr, seconds=seconds)
            self.tracker.log(epoch, "val", val)
            reason = next((r for cb in self.callbacks if (r := cb.stop_reason(self, epoch))), None)
            if reason:
                self.say(reason)
                break
            improved = self.stopper.step(val[metric], epoch)
            if self.dist.main:
                # best before last: last.pt's early-stopping state names a best epoch, and best.pt must never
                # be older than that epoch. Dying between the two writes leaves best.pt one epoch ahead,
                # which the resumed run rewrites with the same weights when it replays that epoch.
                if improved:
                    self.save(self.run.best, epoch)
                self.save(self.run.last, epoch)
                self._print_epoch(epoch, train, val, seconds, improved)
            self.clock.saved()
            # Every rank saw the same summed metrics; rank 0's decision is still the one that counts.
            if broadcast_object(self.stopper.should_stop, self.dist):
                self.say(f"early stop: no {cfg.early_stopping.metric} improvement for "
                         f"{cfg.early_stopping.patience} epochs (best {self.stopper.best:.4f} at epoch "
                         f"{self.stopper.best_epoch})")
                break

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self.train_loader.set_epoch(epoch)
        # Augmentation has its own (seed, epoch) stream, apart from the loader's shuffle, so resume replays it.
        aug_rng = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch + 500_009)
        acc = MetricAccumulator(self.num_classes)
        skip = self._continue_epoch(epoch, aug_rng, acc)  # batches a mid-epoch checkpoint already trained on
        batches = itertools.islice(enumerate(self.train_loader, 1), skip, None)
        bar = progress(batches, total=len(self.train_loader) - skip, desc=f"epoch {epoch}",
                       mode=self.cfg.tracking.progress)
        self.emit("on_epoch_start", epoch)
        with self.clock.arm():  # SIGINT / SIGTERM: this step ends and is checkpointed first (dla.train.interrupt)
            for i, (x, y, idx) in bar:  # this rank's rows of each global batch: (B / world, C, H, W) uint8
                self.train_step(epoch, i, x, y, idx, aug_rng, acc)
        self.emit("on_epoch_end", epoch)
        stats = acc.compute(self.reduce)
        if not math.isfinite(stats["loss"]):  # the logged loss (plain CE) of a finite training objective
            raise TrainingDiverged(
                f"training loss became {stats['loss']} in epoch {epoch}; the last good checkpoint is "
                f"{self._last_good(epoch)}; lower optim.lr or set train.grad_clip")
        return stats

    def train_step(self, epoch: int, i: int, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
                   aug_rng: torch.Generator, acc: MetricAccumulator) -> None:
        """Batch i (from 1) of the epoch: forward, loss, backward, update; then a mid-epoch checkpoint if due."""
        step = (epoch - 1) * len(self.train_loader) + i  # optimizer steps so far, this one included
        x = augment(x, self.cfg.data.augment, aug_rng, rank=self.dist.rank, world=self.dist.world)
        x = self.to_input(x)
        with self.autocast():
            logits = self.forward(x)  # (B, K)
            loss = self.criterion(logits.float(), y, x, idx)
        self.emit("on_loss", step, loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.emit("before_update", step, epoch)
        self.clip_gradients()
        self.optimizer.step()
        self.emit("after_update", step)
        self.scheduler.step()
        if not getattr(self.criterion, "plain_ce", False):  # any callable may stand in for an objective
            loss = F.cross_entropy(logits.detach().float(), y)  # log plain CE, comparable with val and test
        acc.update(loss, logits, y)
        save, stop = self.clock.poll()
        if save:
            self.emit("before_checkpoint", epoch)
            self.save_within(epoch, i, aug_rng, acc)
        if stop:
            self.clock.stop()

    def _continue_epoch(self, epoch: int, aug_rng: torch.Generator, acc: MetricAccumulator) -> int:
        """Resuming inside `epoch`: its augmentation stream and training metrics as checkpointed, and the
        number of batches to skip (the loader's order is a function of (seed, epoch), so the same ones)."""
        if not self.partial or self.partial["epoch"] != epoch:
            return 0
        part, self.partial = self.partial, None
        aug_rng.set_state(part["aug_rng"])
        if self.dist.main:  # rank 0 holds every rank's metrics so far; `compute` sums over ranks
            acc.load_state_dict(part["metrics"], self.device)
        return int(part["batch"])

    def _last_good(self, epoch: int) -> str:
        # Epoch e starts after epoch e - 1 was saved (by this process, or by the one this run resumes), and a
        # mid-epoch checkpoint of e is written only after its steps were checked.
        if self.position and self.run.last.is_file():
            return f"{self.run.last} ({self.position}; resume=true run_name={self.run.path.name} continues it)"
        return "none (no epoch finished)"

    @torch.no_grad()
    def evaluate(self, loader: TensorLoader) -> dict[str, float]:
        broadcast_buffers(self.model, self.dist)
        self.model.eval()
        acc = MetricAccumulator(self.num_classes)
        for x, y in loader:
            with self.autocast():
                # The plain module: evaluation needs neither DDP's gradient hooks nor a second compilation.
                x = self.to_input(x)
                logits = self.model(x)
                if self.cfg.train.test_flip:  # test-time augmentation: the mean of the image's and its mirror's
                    logits = (logits + self.model(x.flip(-1))) / 2
            acc.update(F.cross_entropy(logits.float(), y), logits, y)
        stats = acc.compute(self.reduce)
        self.last_confusion = acc.confusion
        return stats

    def test(self) -> dict[str, float]:
        """Metrics of the best checkpoint on the test set: the only time the test set is touched."""
        state = load_checkpoint(self.run.best)["model"] if self.dist.main else None
        self.load_model_state(broadcast_object(state, self.dist))
        return self.evaluate(self.shard_loader(self.splits.test.x, self.splits.test.y))

    def shard_loader(self, x: torch.Tensor, y: torch.Tensor) -> TensorLoader:
        r, w = self.dist.rank, self.dist.world
        return TensorLoader(x[r::w], y[r::w], self.cfg.data.eval_batch_size, device=self.device)

    # ---------------------------------------------------------------------------------------------
    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float in [0, 1], NHWC in memory when the config asks for channels_last."""
        x = x.float().div_(255)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.train.channels_last else x

    def save(self, path: Path, epoch: int, partial: dict[str, Any] | None = None) -> None:
        """`epoch` = epochs finished; `partial` = how far into the next one (a mid-epoch checkpoint)."""
        extra = {"scheduler": self.scheduler.state_dict(), "early_stopping": self.stopper.state_dict(),
                 **({"partial": partial} if partial else {})}
        self.write_checkpoint(path, epoch, extra)
        if path == self.run.last:
            self.position = position({"epoch": epoch, **extra}, len(self.train_loader))

    def save_within(self, epoch: int, batch: int, aug_rng: torch.Generator, acc: MetricAccumulator) -> None:
        """last.pt after `batch` batches of `epoch`: what `_continue_epoch` needs to replay the rest exactly."""
        metrics = MetricAccumulator.merge_states(gather_objects(acc.state_dict(), self.dist))
        if self.dist.main:
            self.save(self.run.last, epoch - 1, {
                "epoch": epoch, "batch": batch, "lr": self.epoch_lr, "aug_rng": aug_rng.get_state(),
                "seconds": time.perf_counter() - self.epoch_t0, "metrics": metrics})
        self.position = broadcast_object(self.position, self.dist)
        self.clock.saved()

    def restore(self, path: Path) -> int:
        state = self.read_checkpoint(path)
        self.scheduler.load_state_dict(state["scheduler"])
        self.stopper.load_state_dict(state["early_stopping"])
        self.partial, self.position = state.get("partial"), position(state, len(self.train_loader))
        self.say(f"resuming {self.run.path} " + (f"in {self.position}" if self.partial
                                                  else f"after epoch {state['epoch']}"))
        return int(state["epoch"])

    def _print_epoch(self, epoch: int, train: dict[str, float], val: dict[str, float], seconds: float,
                     improved: bool) -> None:
        print(f"epoch {epoch:3d}/{self.cfg.train.epochs}  train loss {train['loss']:.4f} "
              f"acc {100 * train['accuracy']:.2f}%  val loss {val['loss']:.4f} acc {100 * val['accuracy']:.2f}%  "
              + (f"robust {100 * val['robust_accuracy']:.2f}%  " if "robust_accuracy" in val else "")
              + f"{seconds:.1f}s{'  *' if improved else ''}", flush=True)


def _check_resume_config(run: RunDir, cfg: ExperimentConfig) -> None:
    """A resumed run must train the same thing; only `resume` itself may differ.

    A key the saved config does not have (added to dla after the run started) is no difference as long as it
    holds its default: an upgrade between an interruption and its resume does not strand the run.
    """
    saved = read_yaml(run.config) if run.config.is_file() else None
    if saved is None:
        return
    now, old = _flatten(to_dict(cfg)), _flatten(saved)
    default = _flatten(to_dict(from_dict(ExperimentConfig, {"model": {"name": cfg.model.name}})))
    diffs = sorted({k.split(".")[0] for k, v in now.items() if k.split(".")[0] not in ("resume", "run_name")
                    and (old[k] != v if k in old else default.get(k) != v)})
    diffs += sorted({k.split(".")[0] for k in old if k not in now} - set(diffs))
    if diffs:
        raise DlaError(f"cannot resume {run.path}: config differs from the saved one in {', '.join(diffs)}; "
                       "resume with the same overrides, or start a new run")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k not in ("sweep", "variants"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out

SAMPLE = 5000  # training images a model may initialise itself from (ModelInputs.sample)


def run_experiment(cfg: ExperimentConfig, parent: Path, data_root: Path) -> RunDir:
    """`dla run`: train, test, write the run folder under `parent` (`<out>/<experiment>` or a sweep's folder).

    Everything that can fail on bad input (config, data, model) fails before the run folder is created.
    Under torchrun / accelerate every rank runs this; only rank 0 writes.
    """
    dist = init_from_env(cfg.device)
    device = device_for(dist, pick_device(cfg.device))
    check_batch(dist, cfg.data.batch_size)
    check_tracking(cfg.tracking)
    select_objective(cfg).precheck(cfg)  # e.g. a wrong teacher folder is refused before the dataset is loaded
    seed_everything(cfg.seed)  # same seed on every rank: identical initial weights
    splits = load_splits(cfg.data, data_root, cfg.seed)
    if splits.spec.name != cfg.data.name:  # data.fallback: the run is of the fallback, and its config says so
        if dist.main:
            print(f"{cfg.data.name}'s files are not under {data_root}; data.fallback: using {splits.spec.name} "
                  f"({splits.spec.source or splits.spec.description})", flush=True)
        cfg.data.name, cfg.data.fallback = splits.spec.name, ""
    inputs = ModelInputs(splits.input_shape, len(splits.classes), splits.mean, splits.std,
                         sample=splits.train.x[:SAMPLE])
    model = build_model(cfg.model, inputs, training=True).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dist.active and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # batch statistics over the global batch
    criterion = build_criterion(cfg, splits, device, model)  # a bad teacher run fails here, before the run folder
    run = open_run_dir(parent, cfg, device, dist)
    n_params = sum(p.numel() for p in model.parameters())
    where = dist.where(device)
    if dist.main:
        print(f"{cfg.experiment}: {cfg.model.name} ({n_params:,} parameters) on {cfg.data.name} "
              f"({len(splits.train)}/{len(splits.val)}/{len(splits.test)} train/val/test), {where}, "
              f"run {run.path}", flush=True)

    t0 = time.perf_counter()
    with storage_errors(run):
        trainer = Trainer(cfg, model, splits, device, run, dist, criterion)
        train_seconds, test = fit_and_test(trainer, t0)
        if dist.main:
            finish_run(run, cfg, splits, trainer, test, n_params, train_seconds, where)
    return run


def fit_and_test(trainer: Trainer, t0: float) -> tuple[float, dict[str, float]]:
    """Train (Ctrl-C: a resumable stop), then test the best checkpoint: (training seconds since t0, test metrics)."""
    fit_interruptibly(trainer, "epoch")
    return time.perf_counter() - t0, trainer.test()


def fit_interruptibly(trainer: Any, unit: str) -> None:
    """`trainer.fit()` with its StepClock owning SIGINT / SIGTERM (`dla.train.interrupt`), for every task's
    trainer: Ctrl-C ends in the one-line resumable stop, SIGTERM in a quiet exit 143 (after the checkpoint it
    asked for), and the tracker is closed whatever happens."""
    try:
        with trainer.clock.installed():
            trainer.fit()
    except KeyboardInterrupt:
        raise interrupted(trainer.run, trainer.cfg, unit, trainer.position) from None
    finally:
        trainer.tracker.close()


def interrupted(run: RunDir, cfg: ExperimentConfig, unit: str, where: str = "") -> DlaError:
    """What Ctrl-C leaves: how to resume (from `where`, e.g. "epoch 4, batch 120 of 351"), or that there is
    nothing to resume yet."""
    if not run.last.is_file():
        return DlaError(f"interrupted before the first {unit} finished; nothing to resume in {run.path} "
                        "(start again with another run_name)")
    inside = "batch" in where or "step" in where  # a mid-epoch (mid-interval) checkpoint
    held = where if inside else f"the last finished {unit}" + (f" ({where})" if where else "")
    return DlaError(f"interrupted; {run.last} holds {held}; continue with "
                    f"`dla run {cfg.experiment} resume=true run_name={run.path.name}`")


@contextlib.contextmanager
def storage_errors(run: RunDir) -> Iterator[None]:
    """A full or read-only disk ends the run with one line: checkpoints are atomic, so the last one is whole."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _STORAGE_ERRORS:
            raise
        last = f"{run.last} ({position(load_checkpoint(run.last))})" if run.last.is_file() else "none yet"
        raise RunDirError(f"cannot write {exc.filename or 'to the run folder'}: {exc.strerror}; the last complete "
                          f"checkpoint is {last}; free space, then resume=true run_name={run.path.name}") from None


_STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG}


def open_run_dir(parent: Path, cfg: ExperimentConfig, device: torch.device, dist: Dist) -> RunDir:
    """Rank 0 creates (or checks, on resume) the run folder; every rank learns its path or the same error."""
    outcome: tuple[str, str] = ("", "")
    if dist.main:
        try:
            run = prepare_run_dir(parent, cfg)
            if cfg.resume:
                _check_resume_config(run, cfg)
            else:
                write_config(run, cfg)
                write_json(run.env, {**env_info(device, cfg.seed), "world_size": dist.world})
            outcome = (str(run.path), "")
        except DlaError as exc:
            outcome = ("", str(exc))
    path, error = broadcast_object(outcome, dist)
    if error:
        raise DlaError(error)
    return RunDir(Path(path))


def finish_run(run: RunDir, cfg: ExperimentConfig, splits: Splits, trainer: Trainer, test: dict[str, float],
               n_params: int, train_seconds: float, device: str) -> None:
    rows = read_metrics(run.metrics)
    run.plots.mkdir(exist_ok=True)
    plot_curves(rows, run.plots / "curves.png", title=f"{cfg.experiment} / {run.path.name}")
    plot_confusion(trainer.last_confusion.numpy(), splits.classes, run.plots / "confusion_test.png",
                   title=f"test confusion ({100 * test['accuracy']:.2f}% accuracy)")
    plot_run_gradflow(run.path, run.gradflow, run.plots)
    best = trainer.stopper.best_epoch
    results = results_record(
        cfg, run, model=cfg.model.name, data=data_provenance(cfg, splits), parameters=n_params, best_epoch=best,
        epochs_run=max((r["epoch"] for r in rows), default=0), epochs_configured=cfg.train.epochs,
        train_seconds=train_seconds, device=device, train=metrics_at(rows, "train", best),
        val=metrics_at(rows, "val", best), test=test,
        confusion_matrix=trainer.last_confusion.tolist(), classes=splits.classes)
    summary = (f"# {cfg.experiment} / {run.path.name}\n\n"
               f"{cfg.model.name}, {n_params:,} parameters, {data_caption([results])}; best epoch "
               f"{results['best_epoch']} of {results['epochs_run']}; {train_seconds:.1f} s on {device}.\n\n"
               "Test set, best checkpoint:\n\n" + runs_table([(run.path.name, test)]))
    with atomic_write(run.summary, "w") as f:
        f.write(summary)
    write_results(run, results)  # last: its presence marks the run complete
