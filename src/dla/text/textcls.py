"""task=textcls: sentence classification with a pretrained encoder, three ways (Lab 2).

- features: the encoder frozen; pooled sentence vectors computed once (cached), then a logistic-regression or
  2-layer MLP head trained on them;
- finetune: every weight of encoder + head trained end to end;
- lora: PEFT LoRA adapters on the chosen Linear layers + the head; the base weights stay frozen.

All three train with the image loop's `Trainer` (early stopping, atomic checkpoints, resume, TensorBoard, DDP):
a batch is a (B, 2, L) int64 tensor of token ids and attention mask (or (B, D) float features). Checkpoints hold
the trainable weights (and buffers) only: a LoRA checkpoint is the adapters and the head, not 90 MB of frozen
encoder per epoch. Like `dla run`'s image runner, everything that can fail on bad input (config, data, encoder,
target modules) fails before the run folder is created, and results.json is written last.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dla.config import ExperimentConfig
from dla.data import ImageSet, Splits
from dla.data.provenance import ORIGINAL
from dla.distributed import SINGLE, Dist, check_batch, device_for, init_from_env
from dla.errors import ConfigError, DlaError
from dla.io import atomic_write
from dla.report.plots import plot_confusion, plot_curves
from dla.report.tables import markdown_table
from dla.runs import RunDir, results_record, write_results
from dla.runtime import pick_device, seed_everything
from dla.text.batching import LengthBucketLoader
from dla.text.datasets import load_sentence_splits
from dla.text.encoders import TextClassifier, encode_texts, load_encoder, resolve_encoder, trim
from dla.text.features import build_head, cache_key, cached_features, compute_features
from dla.text.lora import apply_lora, check_trainable, plan_lora, trainable_parameters
from dla.text.rotten import SentenceSplits
from dla.tracking import check_tracking, metrics_at, read_metrics
from dla.train.checkpoint import save_checkpoint
from dla.train.loop import Trainer, fit_and_test, open_run_dir, storage_errors
from dla.train.objectives import active_objectives
from dla.train.objectives.cross_entropy import CrossEntropy


class TextTrainer(Trainer):
    """The image Trainer with text inputs; checkpoints keep what is trained (and buffers), not frozen weights."""

    def __init__(self, cfg: ExperimentConfig, model: nn.Module, splits: Splits, device: torch.device, run: RunDir,
                 dist: Dist = SINGLE, lengths: torch.Tensor | None = None) -> None:
        self.frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        super().__init__(cfg, model, splits, device, run, dist, CrossEntropy(cfg.train.label_smoothing))
        if lengths is not None:  # token batches: similar lengths together (same number of batches, same schedule)
            self.train_loader = LengthBucketLoader(
                splits.train.x, splits.train.y, cfg.data.batch_size, lengths=lengths, drop_last=True,
                seed=cfg.seed, device=device, rank=dist.rank, world=dist.world, with_index=True)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return trim(x) if x.dtype == torch.int64 else x  # token ids + mask, or float features as they are

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if k not in self.frozen}

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        missing = [k for k in missing if k not in self.frozen]
        if missing or unexpected:
            raise DlaError(f"checkpoint does not fit this model ({len(missing)} missing, {len(unexpected)} "
                           f"unexpected tensors, e.g. {(missing or unexpected)[0]}); was it written by another "
                           "textcls configuration?")

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "method": self.cfg.textcls.method}


# --------------------------------------------------------------------------------------------------


def _check_config(cfg: ExperimentConfig) -> None:
    t = cfg.train
    unsupported = [o.key for o in active_objectives(cfg)]  # textcls trains with cross-entropy only
    unsupported += [name for name, on in (("data.augment", cfg.data.augment.flip or cfg.data.augment.crop_padding),
                    ("train.grad_flow_every", t.grad_flow_every), ("train.channels_last", t.channels_last)) if on]
    if unsupported:
        raise ConfigError(f"task=textcls does not support {', '.join(unsupported)} (image-training options); "
                          "remove them from the config")
    tc = cfg.textcls
    lora_only = [n for n, on in (("use_dora", tc.use_dora), ("use_rslora", tc.use_rslora),
                                 ("modules_to_save", tc.modules_to_save)) if on]
    if lora_only and tc.method != "lora":
        raise ConfigError(f"textcls.{lora_only[0]} is a LoRA option; it needs textcls.method=lora "
                          f"(not {tc.method})")


def _sort_by_length(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluation order does not change any metric; sorted, each batch is cut to a short longest sentence."""
    order = x[:, 1].sum(1).argsort(stable=True)
    return x[order], y[order]


def _token_splits(data: SentenceSplits, tokenizer: Any, max_length: int) -> tuple[Splits, torch.Tensor]:
    sets = []
    for i, part in enumerate((data.train, data.val, data.test)):
        x, y = encode_texts(tokenizer, part.texts, max_length), part.labels
        if i:
            x, y = _sort_by_length(x, y)
        sets.append(ImageSet(x, y, data.classes))
    lengths = sets[0].x[:, 1].sum(1)
    return Splits(train=sets[0], val=sets[1], test=sets[2], spec=None, mean=(), std=()), lengths  # type: ignore


def _feature_splits(cfg: ExperimentConfig, data: SentenceSplits, encoder: nn.Module, tokenizer: Any,
                    where: str, cache_dir: Path, device: torch.device) -> Splits:
    tc = cfg.textcls
    parts = {"train": data.train, "val": data.val, "test": data.test}
    key = cache_key(where, tc.pooling, tc.max_length, [t for p in parts.values() for t in [*p.texts, "\x00"]])

    def compute() -> dict[str, torch.Tensor]:
        print(f"computing {tc.pooling}-pooled features of {sum(len(p) for p in parts.values())} sentences "
              f"(cached in {cache_dir})", flush=True)
        return {name: compute_features(encoder, tokenizer, p.texts, pooling=tc.pooling, max_length=tc.max_length,
                                       batch_size=cfg.data.eval_batch_size, device=device)
                for name, p in parts.items()}

    feats, hit = cached_features(cache_dir, key, compute)
    if hit:
        print(f"features from the cache: {cache_dir / key}.pt", flush=True)
    sets = [ImageSet(feats[n], p.labels, data.classes) for n, p in parts.items()]
    return Splits(train=sets[0], val=sets[1], test=sets[2], spec=None, mean=(), std=())  # type: ignore


def build_textcls(cfg: ExperimentConfig, data: SentenceSplits, data_root: Path, cache_dir: Path,
                  device: torch.device) -> tuple[nn.Module, Splits, torch.Tensor | None, int, str]:
    """(model to train, splits of its inputs, token lengths of train or None, total parameters, info line)."""
    tc = cfg.textcls
    tokenizer, encoder = load_encoder(tc.encoder, data_root)
    if getattr(encoder, "pooler", None) is not None:
        # Unused by our pooling: its weights would count as trainable yet never get a gradient (DDP refuses that).
        encoder.pooler = None
    k = len(data.classes)
    if tc.method == "lora":
        plan = plan_lora(encoder, tc.lora_targets, tc.lora_r, use_dora=tc.use_dora, use_rslora=tc.use_rslora,
                         modules_to_save=tc.modules_to_save)  # refuses a name that matches nothing
    seed_everything(cfg.seed)  # head (and adapter) initialisation
    if tc.method == "features":
        for p in encoder.parameters():
            p.requires_grad_(False)
        n_encoder = sum(p.numel() for p in encoder.parameters())
        splits = _feature_splits(cfg, data, encoder, tokenizer, resolve_encoder(tc.encoder, data_root), cache_dir,
                                 device)
        model = build_head(tc.head, splits.train.x, k, tc.head_hidden, tc.head_dropout)
        info = f"frozen encoder ({n_encoder:,} parameters), {tc.head} head on {tc.pooling}-pooled features"
        return model, splits, None, n_encoder + sum(p.numel() for p in model.parameters()), info
    splits, lengths = _token_splits(data, tokenizer, tc.max_length)
    if tc.method == "finetune":
        model = TextClassifier(encoder, k, tc.pooling, tc.head_dropout)
        info = "full fine-tuning"
    else:
        model = TextClassifier(apply_lora(encoder, plan, tc.lora_alpha, tc.lora_dropout), k, tc.pooling,
                               tc.head_dropout)
        info = check_trainable(model, plan, model.head)
    return model, splits, lengths, sum(p.numel() for p in model.parameters()), info


def run_textcls(cfg: ExperimentConfig, parent: Path, data_root: Path) -> RunDir:
    """`dla run` for task=textcls: train, test, write the run folder under `parent`."""
    _check_config(cfg)
    dist = init_from_env(cfg.device)
    device = device_for(dist, pick_device(cfg.device))
    check_batch(dist, cfg.data.batch_size)
    check_tracking(cfg.tracking)
    seed_everything(cfg.seed)
    data = load_sentence_splits(cfg.data, data_root, cfg.seed)
    # The feature cache sits beside the runs (runs/<experiment>/.feature-cache, or in the sweep's folder), never
    # in the data root, which may be read-only and shared.
    cache_dir = parent / ".feature-cache"
    model, splits, lengths, n_params, info = build_textcls(cfg, data, data_root, cache_dir, device)
    model.to(device)
    run = open_run_dir(parent, cfg, device, dist)
    n_train = trainable_parameters(model)
    where = dist.where(device)
    if dist.main:
        print(f"{cfg.experiment}: {cfg.textcls.method}, {cfg.textcls.encoder} ({n_params:,} parameters, {n_train:,} "
              f"trainable) on {cfg.data.name} ({len(data.train)}/{len(data.val)}/{len(data.test)} train/val/test), "
              f"{where}, run {run.path}\n  {info}", flush=True)
    t0 = time.perf_counter()
    with storage_errors(run):
        trainer = TextTrainer(cfg, model, splits, device, run, dist, lengths)
        train_seconds, test = fit_and_test(trainer, t0)
        confusion = trainer.last_confusion
        train_eval = trainer.evaluate(trainer.shard_loader(splits.train.x, splits.train.y)) \
            if cfg.textcls.train_eval else None
        if dist.main:
            trainer.last_confusion = confusion
            _finish(run, cfg, data, trainer, test, train_eval, n_params, n_train, train_seconds, where)
            if cfg.textcls.method == "lora":
                _save_adapter(run, model)
    return run


def _save_adapter(run: RunDir, model: TextClassifier) -> None:
    """The best adapters in PEFT's own format (adapter_config.json + adapter_model.safetensors), the head beside:
    `PeftModel.from_pretrained(base, run/adapter)` gets the encoder back; head.pt is the classifier."""
    folder = run.path / "adapter"
    model.encoder.save_pretrained(str(folder))
    save_checkpoint(folder / "head.pt", {"head": model.head.state_dict(), "pooling": model.pooling})


def results_row(res: dict[str, Any]) -> list[str]:
    pct = lambda v: f"{100 * v:.2f}%" if isinstance(v, int | float) else ""  # noqa: E731
    return [res.get("method", ""), res.get("lora_targets", "") or "", str(res.get("lora_r", "") or ""),
            f"{res.get('trainable_parameters', 0):,}", pct(res.get("train", {}).get("accuracy")),
            pct(res.get("val", {}).get("accuracy")), pct(res.get("test", {}).get("accuracy")),
            f"{res.get('train_seconds', 0):.0f} s"]


RESULTS_HEADER = ["Method", "Modules", "Rank", "Trainable params", "Train acc", "Val acc", "Test acc", "Time"]


def results_table(results: list[dict[str, Any]]) -> str:
    """The lab report's table, one row per run's results.json."""
    return markdown_table(RESULTS_HEADER, [results_row(r) for r in results])


def _finish(run: RunDir, cfg: ExperimentConfig, data: SentenceSplits, trainer: TextTrainer, test: dict[str, float],
            train_eval: dict[str, float] | None, n_params: int, n_train: int, train_seconds: float,
            device: str) -> None:
    rows = read_metrics(run.metrics)
    run.plots.mkdir(exist_ok=True)
    plot_curves(rows, run.plots / "curves.png", title=f"{cfg.experiment} / {run.path.name}")
    plot_confusion(trainer.last_confusion.numpy(), data.classes, run.plots / "confusion_test.png",
                   title=f"test confusion ({100 * test['accuracy']:.2f}% accuracy)")
    best, tc = trainer.stopper.best_epoch, cfg.textcls
    # What the run measured on: sizes and limits, as image runs say (dla.data.provenance).
    sizes = {"name": cfg.data.name, "source": ORIGINAL, "train": len(data.train), "val": len(data.val),
             "test": len(data.test), "limit_train": cfg.data.limit_train, "limit_test": cfg.data.limit_test}
    # The best checkpoint in eval mode on the whole training set; without train_eval, that epoch's running
    # accuracy (dropout on, weights moving).
    train = ({k: train_eval[k] for k in ("loss", "accuracy")} if train_eval else
             {"accuracy": metrics_at(rows, "train", best).get("accuracy")})
    results = results_record(
        cfg, run, model=tc.encoder, data=sizes, parameters=n_params, best_epoch=best,
        epochs_run=max((r["epoch"] for r in rows), default=0), epochs_configured=cfg.train.epochs,
        train_seconds=train_seconds, device=device, train=train, val=metrics_at(rows, "val", best), test=test,
        selected_by=cfg.train.early_stopping.metric,  # the validation metric that picked the best epoch
        method=tc.method, trainable_parameters=n_train, confusion_matrix=trainer.last_confusion.tolist(),
        classes=data.classes)
    if tc.method == "lora":
        results.update(lora_targets=tc.lora_targets, lora_r=tc.lora_r, lora_alpha=tc.lora_alpha,
                       lora_dropout=tc.lora_dropout, use_dora=tc.use_dora, use_rslora=tc.use_rslora,
                       modules_to_save=tc.modules_to_save)
    if tc.method == "features":
        results.update(head=tc.head, pooling=tc.pooling)
    summary = (f"# {cfg.experiment} / {run.path.name}\n\n"
               f"{tc.method} on {tc.encoder} ({n_params:,} parameters, {n_train:,} trainable), {cfg.data.name} "
               f"({len(data.train)}/{len(data.val)}/{len(data.test)} train/val/test); best epoch {best} of "
               f"{results['epochs_run']}; {train_seconds:.1f} s on {device}.\n\n"
               f"Best checkpoint ({results['selected_by']} picks it; test touched once; test macro-F1 "
               f"{100 * test['f1']:.2f}%):\n\n" + results_table([results]))
    with atomic_write(run.summary, "w") as f:
        f.write(summary)
    write_results(run, results)  # last: its presence marks the run complete
