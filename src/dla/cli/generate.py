"""`dla generate`: text sampled from a trained language-model run, or from a Hugging Face causal LM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dla.cli.options import Subparsers, add_data_root, add_device
from dla.errors import DlaError


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("generate", help="sample text from a trained language-model run (task=lm), or from a "
                                        "Hugging Face causal LM with --model")
    p.add_argument("run_dir", nargs="?", default=None, help="a run folder written by `dla run dante_char`")
    p.add_argument("--model", default=None, help="instead of a run: a Hugging Face causal LM, a hub id (online) "
                                                 "or a local folder (e.g. DATA_ROOT/models/tiny-gpt2)")
    p.add_argument("--prompt", action="append", default=None,
                   help="text to continue; repeat for several prompts (a left-padded batch with --model)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to add to each prompt (default: 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature; 0 = greedy (default: 0.8)")
    p.add_argument("--top-k", type=int, default=50, help="sample among the k most likely tokens; 0 = all "
                                                         "(default: 50)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass; 1 = off (default: 0.95)")
    p.add_argument("--num-return-sequences", type=int, default=1, help="continuations per prompt (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed: the same seed gives the same text "
                                                       "(default: 0)")
    p.add_argument("--no-kv-cache", action="store_true", help="with a run: recompute the whole context for every "
                                                              "token (to compare tokens/s with the cache)")
    add_device(p)
    add_data_root(p)
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> None:
    from dla.data import resolve_data_root

    if (args.run_dir is None) == (args.model is None):
        raise DlaError("give either a run folder (dla generate runs/dante_char/RUN) or --model ID_OR_FOLDER")
    if args.temperature < 0 or not 0 < args.top_p <= 1 or args.top_k < 0:
        raise DlaError("--temperature must be >= 0, --top-p in (0, 1] and --top-k >= 0")
    data_root = resolve_data_root(args.data_root)
    if args.model is not None:
        _generate_hf(args, data_root)
    else:
        _generate_run(args, data_root)


def _generate_hf(args: argparse.Namespace, data_root: Path) -> None:
    from dla.text.hf import generate_hf

    texts = generate_hf(args.model, args.prompt or [""], max_new_tokens=args.max_new_tokens,
                        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                        num_return_sequences=args.num_return_sequences, seed=args.seed, data_root=data_root,
                        device=args.device)
    for i, outs in enumerate(texts):
        for j, text in enumerate(outs):
            print(f"--- prompt {i + 1}, sequence {j + 1}\n{text}")


def _generate_run(args: argparse.Namespace, data_root: Path) -> None:
    from dla.text.generate import Sampling
    from dla.text.sample_run import sample_run

    samples = sample_run(Path(args.run_dir), args.prompt or ["\n"], args.max_new_tokens,
                         Sampling(args.temperature, args.top_k, args.top_p), n=args.num_return_sequences,
                         seed=args.seed, use_cache=not args.no_kv_cache, device=args.device, data_root=data_root)
    for i, outs in enumerate(samples.texts):
        for j, text in enumerate(outs):
            if len(samples.texts) > 1 or len(outs) > 1:
                print(f"--- prompt {i + 1}, sequence {j + 1}")
            print(text)
    print(f"{samples.tokens} tokens in {samples.seconds:.2f} s: {samples.tokens_per_second:,.0f} tokens/s "
          f"({'no KV cache' if args.no_kv_cache else 'KV cache'})", file=sys.stderr)
