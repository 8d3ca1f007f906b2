"""`dla generate RUN_DIR`: a trained language-model run, rebuilt from its folder, continues prompts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dla.errors import CheckpointError, DlaError, RunDirError
from dla.models import TextInputs, build_model
from dla.runtime import pick_device
from dla.text.corpus import Tokenizer, load_tokenizer_file
from dla.text.generate import CausalLM, Sampling, generate


@dataclass
class Samples:
    texts: list[list[str]]  # per prompt, its continuations (prompt included)
    tokens: int  # new tokens generated, all sequences together
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def load_lm_run(run_dir: Path, data_root: Path, device: str = "auto") -> tuple[CausalLM, Tokenizer]:
    """The run's best weights and its saved vocabulary; every way the folder can be unusable is one line."""
    from dla.config import load_config
    from dla.train.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{run_dir} is not a run folder (no config.yaml); pass a folder written by "
                          "`dla run dante_char`, or --model for a Hugging Face model")
    cfg = load_config(str(run_dir / "config.yaml"))
    if cfg.task != "lm":
        raise RunDirError(f"{run_dir} is a task={cfg.task} run; `dla generate` samples from language-model runs "
                          "(task=lm), or from a Hugging Face model with --model")
    best = run_dir / "checkpoints" / "best.pt"
    if not best.is_file():
        raise RunDirError(f"run {run_dir} has no checkpoints/best.pt yet (it stopped before its first evaluation)")
    if cfg.lm.init_from:  # a fine-tuned pretrained model: its architecture and tokenizer are in the run folder
        from dla.text.pretrained_lm import rebuild_from_run

        model, tok = rebuild_from_run(run_dir, cfg.lm.block_size)
    else:
        tok = load_tokenizer_file(run_dir / "vocab.json", data_root)
        model = build_model(cfg.model, TextInputs(tok.vocab_size, cfg.lm.block_size))
    try:
        model.load_state_dict(load_checkpoint(best)["model"])
    except (KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{best} does not fit the model in config.yaml ({first[:160]})") from None
    return model.to(pick_device(device)).eval(), tok


def sample_run(run_dir: Path, prompts: list[str], max_new_tokens: int, sampling: Sampling, *, n: int = 1,
               seed: int = 0, use_cache: bool = True, device: str = "auto", data_root: Path = Path("data")
               ) -> Samples:
    """Each prompt continued `n` times (a batch of n copies), seeded: the same seed gives the same text."""
    if max_new_tokens < 1 or n < 1:
        raise DlaError("--max-new-tokens and --num-return-sequences must be at least 1")
    model, tok = load_lm_run(run_dir, data_root, device)
    device_ = next(model.parameters()).device
    encoded = [tok.encode(p) for p in prompts]  # unknown characters: one clear line, before any work
    texts, tokens, seconds = [], 0, 0.0
    for i, ids in enumerate(encoded):
        if not ids:
            raise DlaError("the prompt is empty; give at least one character (e.g. --prompt 'Nel mezzo')")
        batch = torch.tensor([ids] * n, device=device_)  # (n, T0)
        out = generate(model, batch, max_new_tokens, sampling, seed=seed + i, use_cache=use_cache)
        texts.append([tok.decode(row.tolist()) for row in out.ids])
        tokens += out.new_tokens * n
        seconds += out.seconds
    return Samples(texts, tokens, seconds)
