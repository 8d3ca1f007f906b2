"""Training a language model (task=lm): random blocks -> GPT (or LLaMA-style) -> AdamW, with evaluation every N steps.

Read `LMTrainer.fit` top to bottom: it is the algorithm (nanoGPT's train.py, minus the globals). Everything
it needs is built in `__init__`; everything a run leaves behind (loss curves, samples.txt, results.json last
of all) is written by `run_lm`. Iterations play the role epochs play for the image runs: metrics.csv's
`epoch` column holds the step, checkpoints are taken at each evaluation, and the best one is kept on
val loss.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dla.config import EarlyStoppingConfig, ExperimentConfig
from dla.data.provenance import ORIGINAL
from dla.distributed import (
    SINGLE,
    Dist,
    all_reduce_sum,
    check_batch,
    device_for,
    init_from_env,
)
from dla.io import atomic_write
from dla.models import TextInputs, build_model
from dla.report.gradflow import plot_run_gradflow
from dla.report.lm import plot_lm_curves
from dla.runs import RunDir, results_record, write_json, write_results
from dla.runtime import pick_device, seed_everything
from dla.text.bpc import bits_per_character, estimate_bpc, split_nats
from dla.text.corpus import BlockSampler, Corpus, load_corpus
from dla.text.generate import Sampling, generate
from dla.tracking import check_tracking, metrics_at, progress, read_metrics
from dla.train.callbacks import Callback, gradflow_callbacks
from dla.train.checkpoint import load_checkpoint
from dla.train.early_stopping import EarlyStopping
from dla.train.engine import Engine
from dla.train.loop import TrainingDiverged, fit_interruptibly, open_run_dir, storage_errors
from dla.train.optim import build_optimizer, lr_factor


class LMTrainer(Engine):
    def __init__(self, cfg: ExperimentConfig, model: torch.nn.Module, corpus: Corpus, device: torch.device,
                 run: RunDir, dist: Dist = SINGLE, callbacks: list[Callback] | None = None) -> None:
        self.cfg, self.model, self.corpus, self.device, self.run, self.dist = cfg, model, corpus, device, run, dist
        lm = cfg.lm
        self.train_batches = BlockSampler(corpus.train, lm.block_size, cfg.data.batch_size, cfg.seed)
        self.optimizer = build_optimizer(model, cfg.optim)  # weight decay on matrices only
        # Warmup, then cosine down to schedule.min_lr_ratio at lr_decay_iters (and flat after it).
        decay = lm.lr_decay_iters or lm.max_iters
        schedule = dataclasses.replace(cfg.schedule, warmup_epochs=lm.warmup_iters)
        self.lr_at = lambda step: cfg.optim.lr * lr_factor(step, schedule, 1, decay)
        # The image loop's early stopping, on val loss per evaluation: lm.patience evaluations without a new best.
        self.stopper = EarlyStopping(EarlyStoppingConfig("val/loss", "min", lm.patience))
        # Under torchrun every rank draws the same global batch of blocks and trains on its rows `rank::world`;
        # DDP averages the gradients, so N processes take the steps of one (dla.distributed).
        self.setup(model, run, dist, device)
        # What the config asks for: gradient flow, with the image loop's callback.
        self.callbacks = gradflow_callbacks(self) if callbacks is None else callbacks
        self.step, self.resumed_at = 0, -1
        if cfg.resume:
            self.restore(run.last)
        self.start(self.step, self.step)

    @property
    def best_val(self) -> float:
        return math.inf if math.isnan(self.stopper.best) else self.stopper.best

    @property
    def best_step(self) -> int:
        return max(self.stopper.best_epoch, 0)

    # ---------------------------------------------------------------------------------------------
    def fit(self) -> None:
        lm = self.cfg.lm
        bar = progress(range(self.step, lm.max_iters + 1), total=lm.max_iters + 1 - self.step, desc="train",
                       mode=self.cfg.tracking.progress)
        t0, tokens = time.perf_counter(), 0
        for step in bar:
            self.step = step
            # Evaluate (and checkpoint) every eval_interval steps, before that step's update; a resumed run
            # starts right after the evaluation its checkpoint was taken at.
            if (step % lm.eval_interval == 0 or step == lm.max_iters) and step != self.resumed_at:
                losses = {split: self.estimate_loss(split) for split in ("train", "val")}
                seconds = time.perf_counter() - t0
                self.log_eval(step, losses, tokens / max(seconds, 1e-9))
                t0, tokens = time.perf_counter(), 0
                if self.should_stop(step, losses["val"]):
                    break
            if step == lm.max_iters:
                break

            with self.clock.arm():  # SIGINT / SIGTERM: this step ends and is checkpointed first
                tokens += self.train_step(step)

    def train_step(self, step: int) -> int:
        """One update on a fresh batch; then a mid-interval checkpoint if due. Returns the tokens trained on."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(step)
        r, w = self.dist.rank, self.dist.world
        x, y = (t[r::w].to(self.device) for t in self.train_batches.next())  # this rank's rows: (B / world, T)
        with self.autocast():
            logits = self.forward(x)  # (B / world, T, V)
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))
        self.emit("on_loss", step + 1, loss)  # optimizer steps counted from 1, as in the image loop
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.emit("before_update", step + 1, 0)  # no epochs: gradient-flow rows say epoch 0
        self.clip_gradients()
        # Stop at the first non-finite loss, before it reaches the weights. (`.item()` syncs a GPU once
        # per step; at these model sizes that costs little next to training on garbage.)
        if not math.isfinite(loss.item()) or self._diverged_elsewhere(loss):
            raise TrainingDiverged(f"training loss became {loss.item()} at step {step}; the last good "
                                   f"checkpoint is {self.run.last if self.run.last.is_file() else 'none'}; "
                                   "lower optim.lr or set train.grad_clip")
        self.optimizer.step()
        self.emit("after_update", step + 1)
        save, stop = self.clock.poll()
        if save:  # taken after step's update: the resumed run goes on at step + 1, with no evaluation first
            self.emit("before_checkpoint", 0)
            self.save(self.run.last, at=step + 1, evaluated=False)
            self.clock.saved()
        if stop:
            self.clock.stop()
        return x.numel()

    def _diverged_elsewhere(self, loss: torch.Tensor) -> bool:
        """Under torchrun: whether some rank's loss is not finite (every rank then stops at the same step)."""
        if not self.dist.active:
            return False
        bad = torch.tensor([0.0 if math.isfinite(loss.item()) else 1.0], device=self.clock.device)
        return bool(all_reduce_sum(bad, self.dist).item() > 0)

    @torch.no_grad()
    def estimate_loss(self, split: str) -> float:
        """Mean loss over lm.eval_iters fixed batches: the same blocks at every evaluation, so curves compare."""
        ids = self.corpus.ids(split)
        batches = BlockSampler(ids, self.cfg.lm.block_size, self.cfg.data.batch_size, seed=1_000_003)
        self.model.eval()
        total = 0.0
        for _ in range(self.cfg.lm.eval_iters):
            x, y = (t.to(self.device) for t in batches.next())
            with self.autocast():
                logits = self.model(x)
            total += F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1)).item()
        self.model.train()
        return total / self.cfg.lm.eval_iters

    def should_stop(self, step: int, val_loss: float) -> bool:
        """Keep the best checkpoint on val loss; True when lm.patience evaluations brought no new best."""
        if not math.isfinite(val_loss):
            raise TrainingDiverged(f"val loss became {val_loss} at step {step}; the last good checkpoint is "
                                   f"{self.run.last if self.run.last.is_file() else 'none'}; lower optim.lr")
        if self.stopper.step(val_loss, step):  # best before last: a crash between the two never leaves
            self.save(self.run.best)            # last.pt ahead of its best.pt
        self.save(self.run.last)
        self.clock.saved()
        if self.stopper.should_stop:  # every rank evaluated the same weights on the same blocks: no broadcast
            self.say(f"early stop at step {step}: no val loss improvement for {self.cfg.lm.patience} "
                     f"evaluations (best {self.best_val:.4f} at step {self.best_step})")
            return True
        return False

    def log_eval(self, step: int, losses: dict[str, float], tokens_per_s: float) -> None:
        lr = self.lr_at(min(step, self.cfg.lm.max_iters - 1))  # the rate the next update uses
        for split, loss in losses.items():
            self.tracker.log(step, split, {"loss": loss, "bpc": self.bpc(split, loss)},  # bpc: TensorBoard only
                             lr=lr if split == "train" else None)
        speed = f"  {tokens_per_s * self.dist.world:,.0f} tok/s" if step else ""  # all ranks together
        self.say(f"step {step:5d}/{self.cfg.lm.max_iters}  train loss {losses['train']:.4f}  val loss "
              f"{losses['val']:.4f} ({self.bpc('val', losses['val']):.3f} bpc)  lr {lr:.2e}{speed}")

    def bpc(self, split: str, loss: float) -> float:
        """A loss per token in bits per character of the split's original text (the same for char tokens)."""
        return estimate_bpc(loss, len(self.corpus.ids(split)), self.corpus.chars(split))

    # ---------------------------------------------------------------------------------------------
    def save(self, path: Path, at: int | None = None, evaluated: bool = True) -> None:
        """At an evaluation (before step `at`'s update), or `evaluated=False`: between evaluations. Rank 0 writes."""
        at = self.step if at is None else at
        if path == self.run.last:
            self.position = f"the evaluation at step {at}" if evaluated else f"step {at} (between evaluations)"
        self.write_checkpoint(path, at, {"evaluated": evaluated, "early_stopping": self.stopper.state_dict(),
                                         "sampler": self.train_batches.generator.get_state()})

    def restore(self, path: Path) -> None:
        state = self.read_checkpoint(path)
        # Checkpoints written before the LM loop shared the image loop's early stopping kept its three numbers.
        self.stopper.load_state_dict(state.get("early_stopping") or {
            "best": state["best_val"], "best_epoch": state["best_step"], "bad_epochs": state["bad_evals"]})
        self.train_batches.generator.set_state(state["sampler"])
        # A checkpoint taken at an evaluation, before that step's update: pick up right after the evaluation (it
        # is not repeated, and its metrics rows are kept). One taken between evaluations: at its step, as is.
        self.step = int(state["epoch"])
        self.resumed_at = self.step if state.get("evaluated", True) else -1
        self.position = f"step {self.step}"
        self.say(f"resuming {self.run.path} at step {self.step}")


def run_lm(cfg: ExperimentConfig, parent: Path, data_root: Path) -> RunDir:
    """`dla run` for task=lm: train, sample from the best checkpoint, write the run folder under `parent`."""
    dist = init_from_env(cfg.device)
    device = device_for(dist, pick_device(cfg.device))
    check_batch(dist, cfg.data.batch_size)
    check_tracking(cfg.tracking)
    seed_everything(cfg.seed)  # same seed on every rank: identical initial weights
    lm = cfg.lm
    model, corpus = _model_and_corpus(cfg, data_root)
    model = model.to(device)
    prompt = lm.sample_prompt or _first_line(corpus)
    corpus.tokenizer.encode(prompt)  # an unknown character fails now, not after training
    run = open_run_dir(parent, cfg, device, dist)  # rank 0 creates (or checks, on resume) the one run folder
    n_params = sum(p.numel() for p in model.parameters())  # tied head counted once
    if dist.main:
        _write_tokenizer(run, corpus, model)
        sizes, names = f"{len(corpus.train):,} / {len(corpus.val):,}", "train / val"
        if corpus.test is not None:
            sizes, names = f"{sizes} / {len(corpus.test):,}", f"{names} / test"
        print(f"{cfg.experiment}: {describe_model(cfg, n_params)} on {cfg.data.name} ({sizes} {names} "
              f"{corpus.tokenizer.name} tokens, vocabulary "
              f"{corpus.tokenizer.vocab_size}), {dist.where(device)}, run {run.path}", flush=True)

    t0 = time.perf_counter()
    with storage_errors(run):
        trainer = LMTrainer(cfg, model, corpus, device, run, dist)
        fit_interruptibly(trainer, "evaluation")
        if dist.main:
            finish_lm(run, cfg, trainer, prompt, n_params, time.perf_counter() - t0, dist.where(device))
    return run


def _write_tokenizer(run: RunDir, corpus: Corpus, model: torch.nn.Module) -> None:
    """vocab.json (and a pretrained model's architecture), so `dla generate RUN` needs nothing else."""
    if hasattr(corpus.tokenizer, "save"):
        corpus.tokenizer.save(run.path / "vocab.json")
    else:
        write_json(run.path / "vocab.json", {"tokenizer": corpus.tokenizer.name})
    if hasattr(model, "save_config"):
        model.save_config(run.path)


def _model_and_corpus(cfg: ExperimentConfig, data_root: Path) -> tuple[torch.nn.Module, Corpus]:
    """model.* built from scratch on the corpus's tokenizer, or the pretrained model lm.init_from names and the
    corpus in its tokenizer."""
    lm = cfg.lm
    if lm.init_from:
        from dla.text.pretrained_lm import load_pretrained

        model, tok = load_pretrained(lm.init_from, data_root, lm.block_size)
        return model, load_corpus(cfg.data.name, data_root, tok, lm.train_fraction, lm.block_size, cfg.data.path,
                                  test_fraction=lm.test_fraction)
    corpus = load_corpus(cfg.data.name, data_root, lm.tokenizer, lm.train_fraction, lm.block_size, cfg.data.path,
                         word_min_count=lm.word_min_count, word_vocab_size=lm.word_vocab_size,
                         test_fraction=lm.test_fraction)
    return build_model(cfg.model, TextInputs(corpus.tokenizer.vocab_size, lm.block_size), training=True), corpus


def full_split(trainer: LMTrainer, split: str = "val") -> dict[str, Any]:
    """The best checkpoint on a whole held-out split, every token predicted once (the preceding split's last
    token as the first one's context): total nats, and bits per character of the original text."""
    c, lm = trainer.corpus, trainer.cfg.lm
    ids = c.ids(split)
    nats = split_nats(trainer.model, ids, lm.block_size, trainer.cfg.data.batch_size, trainer.device,
                      context=c.train if split == "val" else c.val, autocast=trainer.autocast)
    chars = c.chars(split)
    out: dict[str, Any] = {"nats": nats, "tokens": len(ids), "characters": chars, "loss": nats / len(ids),
                           "bpc": bits_per_character(nats, chars)}
    if c.tokenizer.name == "word":  # the share of <unk>: a word model's bpc ignores how an unknown word is spelt
        out["unknown_tokens"] = int((ids == 0).sum())
    return out


def model_label(cfg: ExperimentConfig) -> str:
    return f"pretrained {cfg.lm.init_from}" if cfg.lm.init_from else cfg.model.name


def describe_model(cfg: ExperimentConfig, n_params: int) -> str:
    """'llama (812,160 parameters, 4 layers x 4 heads (2 key/value) x 128)'."""
    m = cfg.model
    if cfg.lm.init_from:
        return f"{model_label(cfg)} ({n_params:,} parameters, fine-tuned)"
    kv = f" ({m.n_kv_head} key/value)" if getattr(m, "n_kv_head", 0) else ""
    return f"{m.name} ({n_params:,} parameters, {m.n_layer} layers x {m.n_head} heads{kv} x {m.n_embd})"


def _first_line(corpus: Corpus) -> str:
    text = corpus.tokenizer.decode(corpus.train[:200].tolist())
    return next((line for line in text.splitlines() if line.strip()), text[:20])


def finish_lm(run: RunDir, cfg: ExperimentConfig, trainer: LMTrainer, prompt: str, n_params: int,
              train_seconds: float, device: str) -> None:
    model, tok, lm = trainer.model, trainer.corpus.tokenizer, cfg.lm
    model.load_state_dict(load_checkpoint(run.best)["model"])
    rows = read_metrics(run.metrics)
    run.plots.mkdir(exist_ok=True)
    plot_lm_curves(rows, run.plots / "curves.png", title=f"{cfg.experiment} / {run.path.name}")
    plot_run_gradflow(run.path, run.gradflow, run.plots)
    sample = ""
    if lm.sample_tokens:
        ids = torch.tensor([tok.encode(prompt)], device=trainer.device)
        out = generate(model, ids, lm.sample_tokens, Sampling(lm.temperature, lm.top_k, lm.top_p), seed=cfg.seed)
        sample = tok.decode(out.ids[0].tolist())
        with atomic_write(run.path / "samples.txt", "w") as f:
            f.write(sample + "\n")
    train_at_best = metrics_at(rows, "train", trainer.best_step).get("loss", math.nan)
    val = {"loss": trainer.best_val, "bpc": trainer.bpc("val", trainer.best_val)}
    # With lm.test_fraction the tail of the text is the test, scored whole once; without, val doubles as it.
    test = full_split(trainer, "test") if trainer.corpus.test is not None else val
    corpus = trainer.corpus
    sizes = {"name": cfg.data.name, "source": ORIGINAL, "unit": f"{tok.name} tokens", "train": len(corpus.train),
             "val": len(corpus.val), "test": len(corpus.test) if corpus.test is not None else 0}
    results = results_record(
        cfg, run, model=model_label(cfg), data=sizes, parameters=n_params, best_epoch=trainer.best_step,
        epochs_run=trainer.step, epochs_configured=lm.max_iters, train_seconds=train_seconds, device=device,
        train={"loss": train_at_best, "bpc": trainer.bpc("train", train_at_best)}, val=val, test=test,
        budget_unit="steps", tokenizer=tok.name, vocab_size=tok.vocab_size, val_full=full_split(trainer, "val"))
    full = results["val_full"]
    summary = (f"# {cfg.experiment} / {run.path.name}\n\n"
               f"{model_label(cfg)}, {n_params:,} parameters, {tok.name} tokens on {cfg.data.name}; best val loss "
               f"{trainer.best_val:.4f} per token ({val['bpc']:.3f} bits per character) "
               f"at step {trainer.best_step} of {trainer.step}; {train_seconds:.1f} s on {device}. On the whole "
               f"validation text: {full['bpc']:.3f} bits per character ({full['nats']:,.0f} nats over "
               f"{full['characters']:,} characters, {full['tokens']:,} tokens)"
               + (f"; on the test text (lm.test_fraction={lm.test_fraction}): loss {test['loss']:.4f} per token, "
                  f"{test['bpc']:.3f} bits per character" if trainer.corpus.test is not None else "") + ".\n\n"
               + (f"Sample (best checkpoint, temperature {lm.temperature}, top-k {lm.top_k}, top-p {lm.top_p}):\n\n"
                  + "```\n" + sample + "\n```\n" if sample else ""))
    with atomic_write(run.summary, "w") as f:
        f.write(summary)
    write_results(run, results)  # last: its presence marks the run complete
