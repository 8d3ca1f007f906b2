"""Experiment configs: YAML (safe loader) into typed dataclasses, with dotted overrides.

Every field carries its help text and its allowed range in `dataclasses.field(metadata=...)`, like PEFT's
`LoraConfig`: the same text serves validation messages, `dla explain-config` style help and the docs.
Validation is strict: an unknown key, a wrong type or an out-of-range value raises `ConfigError` naming
the dotted key, what was given and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from dla.errors import ConfigError

_MISSING = dataclasses.MISSING


def opt(
    default: Any = _MISSING,
    help: str = "",
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Iterable[str] | Callable[[], Iterable[str]] | None = None,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field with help text and an allowed range, checked by `from_dict`."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


class Checked:
    """Validation on construction: a config built in Python (`AdversarialConfig(eps=5.0)`) is refused as the same
    value in YAML is, with the same message (the key named `Class.field`). `from_dict` has already checked and
    converted its values under their dotted keys, so this second pass only ever fires for direct construction.
    """

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):  # a nested config checked itself when it was built
                continue
            checked = _coerce(f"{type(self).__name__}.{f.name}", value, hints[f.name], dict(f.metadata))
            object.__setattr__(self, f.name, checked)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# --------------------------------------------------------------------------------------------------
# The experiment schema


@dataclass
class AugmentConfig(Checked):
    flip: bool = opt(False, "random horizontal flip (batched tensor code, on the training device)")
    crop_padding: int = opt(0, "pad by this many pixels and crop back at a random offset; 0 = off", ge=0, le=16)


@dataclass
class DataConfig(Checked):
    name: str = opt("mnist", "dataset from the registry (`dla list --datasets`), or hf:<id> for a Hugging Face "
                             "text-classification dataset (a Hub id, or a local copy's path)",
                    choices=lambda: _datasets())
    path: str = opt("", "folder under the data root (or absolute) for file-based datasets (imagefolder); for a "
                        "text-classification dataset, its local copy: a save_to_disk folder, parquet or CSV")
    text_column: str = opt("", "text classification: the column(s) holding the text, several joined by + (empty = "
                               "the preset's, else text)")
    label_column: str = opt("", "text classification: the column of integer class indices (empty = the preset's, "
                                "else label)")
    fallback: str = opt("", "dataset to use when data.name's files are not on this machine (cifar10 -> cifar10_jpeg: "
                            "the JPEG copy when the original pickles are absent); said on one line and recorded "
                            "in the run's config and results, never silent", choices=lambda: ["", *_datasets()])
    image_size: int = opt(0, "resize file-based images / noise size; 0 = native (noise: 32)", ge=0, le=4096)
    channels: int = opt(0, "1 = grey, 3 = colour for file-based images and noise; 0 = default (3)", ge=0, le=3)
    val_size: int = opt(5000, "training examples held out for validation (seeded); picks the best checkpoint. "
                              "0 (no validation split) is for library use; a training run needs >= 1", ge=0)
    batch_size: int = opt(128, "training batch size", ge=1)
    eval_batch_size: int = opt(1000, "batch size for validation and test", ge=1)
    limit_train: int = opt(0, "use only the first N training examples (0 = all); for quick checks", ge=0)
    limit_test: int = opt(0, "use only the first N test examples (0 = all); for quick checks", ge=0)
    classes: list[int] = opt(help="keep only these class indices, relabelled 0..k-1 in this order (empty = all); "
                                  "the other classes' test images become the `heldout` OOD set of `dla ood`",
                             default_factory=list)
    workers: int = opt(2, "DataLoader workers for file-based datasets (ImageFolder)", ge=0)
    augment: AugmentConfig = opt(default_factory=AugmentConfig, help="training-time augmentation")


@dataclass
class OptimConfig(Checked):
    name: Literal["sgd", "adamw"] = opt("adamw", "optimizer")
    lr: float = opt(1e-3, "peak learning rate", gt=0)
    weight_decay: float = opt(0.0, "decoupled (AdamW) or L2 (SGD) weight decay; not applied to biases/norms", ge=0)
    momentum: float = opt(0.9, "SGD momentum", ge=0, lt=1)
    nesterov: bool = opt(False, "Nesterov momentum for SGD")
    beta1: float = opt(0.9, "AdamW beta1", ge=0, lt=1)
    beta2: float = opt(0.999, "AdamW beta2", ge=0, lt=1)


@dataclass
class ScheduleConfig(Checked):
    name: Literal["constant", "cosine", "onecycle", "step"] = opt("cosine", "learning-rate schedule, per step")
    warmup_epochs: float = opt(0.0, "linear warmup from 0 over this many epochs (fractions allowed)", ge=0)
    min_lr_ratio: float = opt(0.0, "cosine/onecycle floor as a fraction of the peak lr", ge=0, le=1)
    step_epochs: int = opt(10, "step schedule: multiply the lr by gamma every this many epochs", ge=1)
    gamma: float = opt(0.1, "step schedule: decay factor", gt=0, le=1)


@dataclass
class EarlyStoppingConfig(Checked):
    metric: str = opt("val/accuracy", "metric watched for the best checkpoint and early stopping; precision, "
                                      "recall and f1 are macro averages over the classes (val/f1 = macro-F1)",
                      choices=lambda: [f"val/{m}" for m in ("loss", "accuracy", "precision", "recall", "f1")])
    mode: Literal["max", "min"] = opt("max", "whether larger or smaller values of the metric are better")
    patience: int = opt(5, "epochs without improvement before stopping; 0 = never stop early", ge=0)
    min_delta: float = opt(0.0, "an improvement must exceed this to reset patience", ge=0)


@dataclass
class OutlierExposureConfig(Checked):
    dataset: str = opt("", "auxiliary OOD dataset for outlier exposure (Hendrycks et al. 2019): its train split, "
                           "brought to the ID shape, is pushed to a uniform softmax; empty = off; fgsm = FGSM "
                           "copies of each ID batch (at train.outlier_exposure.eps) instead of a dataset. Never the "
                           "OOD set you test on", choices=lambda: ["", "fgsm", *_datasets()])
    path: str = opt("", "folder of an imagefolder auxiliary set (under the data root, or absolute)")
    weight: float = opt(0.5, "lambda: loss = CE(ID) + lambda * CE(auxiliary logits, uniform)", ge=0)
    batch_size: int = opt(128, "auxiliary images per training step (drawn at random, seeded); fgsm: the first "
                               "batch_size images of each ID batch are perturbed", ge=1)
    eps: float = opt(0.3, "fgsm source only: L_inf step of the FGSM copies, pixel units (0.3 on MNIST: visibly "
                          "perturbed digits)", gt=0, le=1)
    batchnorm: Literal["eval", "batch"] = opt(
        "eval", "BatchNorm in the auxiliary pass: eval = the ID running statistics (as at test time); batch = the "
                "auxiliary batch's own statistics, as the ID batch is in train mode, so the network cannot tell the "
                "passes apart by BatchNorm mode. Neither updates the running statistics")


@dataclass
class AdversarialConfig(Checked):
    method: Literal["none", "fgsm", "pgd"] = opt(
        "none", "adversarial training: examples made on the fly by dla.attacks (eval mode) from each batch; "
                "none = off. FGSM with a random start (Wong et al. 2020) is pgd with steps=1, alpha=1.25*eps")
    eps: float = opt(0.1, "L_inf radius in pixel units ([0, 1] images; fractions like 8/255 allowed)", ge=0, le=1)
    alpha: float = opt(0.0, "PGD step size in pixel units; 0 = 2.5 * eps / steps (Madry et al.)", ge=0, le=1)
    steps: int = opt(7, "PGD steps per batch", ge=1, le=1000)
    random_start: bool = opt(True, "PGD starts from a uniform random point of the eps-ball")
    mix: float = opt(0.5, "weight of the adversarial loss: (1 - mix) * CE(clean) + mix * CE(adversarial); "
                          "0.5 = Goodfellow et al. 2015, 1.0 = Madry et al. 2018", ge=0, le=1)
    target: int = opt(-1, "targeted adversarial training: every example's copy is pushed toward this class index "
                          "(the targeted attack's standard loss), the trained label stays the true one; -1 = "
                          "untargeted", ge=-1)
    fraction: float = opt(1.0, "fraction of each batch attacked: the adversarial term is the loss on the batch whose "
                               "first round(fraction * B) rows are replaced by adversarial copies", gt=0, le=1)
    guard: bool | None = opt(None, "catastrophic-overfitting guard (Wong et al. 2020): PGD accuracy on a fixed "
                                   "validation batch after each epoch; on a collapse, back to the previous epoch's "
                                   "weights and stop. Default (null): on for method=fgsm only")
    guard_drop: float = opt(0.2, "guard: a collapse is robust accuracy this far (absolute) below its best", gt=0, le=1)
    guard_steps: int = opt(10, "guard: PGD steps (alpha = 2.5 * eps / steps, at the training eps)", ge=1, le=1000)
    guard_size: int = opt(256, "guard: number of validation images (the first ones, fixed)", ge=1)

    @property
    def guarded(self) -> bool:
        """Whether the guard runs: `guard` when set, else on for FGSM training (the method that overfits so)."""
        return self.method != "none" and (self.method == "fgsm" if self.guard is None else self.guard)


@dataclass
class TrainConfig(Checked):
    epochs: int = opt(20, "maximum number of epochs", ge=1)
    label_smoothing: float = opt(0.0, "cross-entropy label smoothing", ge=0, lt=1)
    grad_clip: float = opt(0.0, "clip the global gradient norm to this value; 0 = off", ge=0)
    early_stopping: EarlyStoppingConfig = opt(default_factory=EarlyStoppingConfig, help="best checkpoint + stop")
    amp: bool = opt(True, "bf16 autocast on CUDA (ignored on CPU)")
    amp_cpu: bool = opt(False, "bf16 autocast on CPU too, on CPUs that compute bf16 natively (AVX512-BF16, AMX; "
                               "elsewhere ignored): about 2x faster matmuls, at bf16 precision")
    compile: bool = opt(False, "wrap the model in torch.compile (opt-in)")
    channels_last: bool = opt(False, "NHWC memory format for model and images (faster convs on CPU and GPU)")
    test_flip: bool = opt(False, "validation and test logits averaged over each image and its mirror image "
                                 "(test-time augmentation); attacks, OOD scores and explanations see one view")
    checkpoint_every_s: float = opt(300.0, "also write last.pt inside an epoch every N seconds (and on SIGINT / "
                                           "SIGTERM), resumed from that batch exactly; 0 = at epoch ends only",
                                    ge=0)
    grad_flow_every: int = opt(0, "record per-layer gradient norms and update/weight ratios every N steps "
                                  "(gradflow.csv + plots); 0 = off", ge=0)
    adversarial: AdversarialConfig = opt(default_factory=AdversarialConfig,
                                         help="adversarial training (FGSM / PGD examples mixed into the loss)")
    outlier_exposure: OutlierExposureConfig = opt(default_factory=OutlierExposureConfig,
                                                  help="outlier exposure: an auxiliary OOD set trained to uniform")


@dataclass
class DistillConfig(Checked):
    teacher: str = opt("", "teacher run folder (written by `dla run`); empty = train on the labels alone")
    temperature: float = opt(4.0, "softmax temperature T of the soft targets", gt=0, le=100)
    alpha: float = opt(0.5, "weight of cross-entropy on the labels; 1 - alpha weighs T^2 * KL(teacher || student)",
                       ge=0, le=1)
    teacher_outputs: Literal["online", "cached"] = opt(
        "online", "teacher logits computed on every (augmented) batch, or once for the training set "
                  "(only without augmentation)")


@dataclass
class TrackingConfig(Checked):
    tensorboard: bool = opt(True, "write TensorBoard events under the run's tb/")
    wandb: bool = opt(False, "also log to Weights & Biases (needs `pip install dla[wandb]`)")
    wandb_project: str = opt("dla", "W&B project name")
    progress: Literal["auto", "on", "off"] = opt("auto", "progress bars: auto = only when stderr is a terminal")


@dataclass
class LMConfig(Checked):
    """Language modelling (task=lm): a decoder-only transformer trained on random contiguous blocks."""

    tokenizer: Literal["char", "gpt2", "word"] = opt(
        "char", "char = one token per character, vocabulary saved with the run; gpt2 = GPT-2 byte-level BPE (data "
                "root gpt2_tokenizer/); word = words, punctuation and whitespace, vocabulary from the training part "
                "only (lm.word_min_count, lm.word_vocab_size), unknown pieces <unk>")
    word_min_count: int = opt(2, "lm.tokenizer=word: a training piece seen fewer times is <unk> (so the model "
                                 "learns <unk> from rare training words)", ge=1)
    word_vocab_size: int = opt(0, "lm.tokenizer=word: at most this many entries, <unk> included, the most frequent "
                                  "kept; 0 = no cap", ge=0)
    init_from: str = opt("", "fine-tune a pretrained Hugging Face causal LM instead of training model.* from "
                             "scratch: a local folder, a name under the data root's models/, or a hub id such as "
                             "gpt2 (online); its own tokenizer replaces lm.tokenizer")
    block_size: int = opt(64, "context length in tokens", ge=2, le=8192)
    train_fraction: float = opt(0.9, "the first fraction of the text trains, the rest validates", gt=0, lt=1)
    test_fraction: float = opt(0.0, "the last fraction of the text tests, scored once with the best checkpoint (val "
                                    "lies between); 0 = no test text, val doubles as the test", ge=0, lt=1)
    max_iters: int = opt(2000, "optimizer steps", ge=1)
    eval_interval: int = opt(250, "estimate train/val loss every N steps (and at the last step)", ge=1)
    eval_iters: int = opt(200, "batches averaged per loss estimate (fixed, seeded, the same at every evaluation)",
                          ge=1)
    warmup_iters: int = opt(100, "linear warmup from 0 over this many steps", ge=0)
    lr_decay_iters: int = opt(0, "cosine decay ends here (then min lr); 0 = max_iters", ge=0)
    min_lr_ratio: float = opt(0.1, "floor of the cosine decay as a fraction of optim.lr", ge=0, le=1)
    patience: int = opt(0, "stop after this many evaluations without a new best val loss; 0 = never", ge=0)
    sample_tokens: int = opt(500, "tokens generated into samples.txt from the best checkpoint at the end", ge=0)
    sample_prompt: str = opt("", "prompt of that sample (empty = the first line of the text)")
    temperature: float = opt(0.8, "sampling temperature of that sample", gt=0)
    top_k: int = opt(50, "sample among the k most likely tokens; 0 = all", ge=0)
    top_p: float = opt(0.95, "nucleus sampling: the smallest set of tokens holding this probability", gt=0, le=1)


@dataclass
class TextClsConfig(Checked):
    """Text classification with a pretrained Hugging Face encoder (task=textcls)."""

    method: Literal["features", "finetune", "lora"] = opt(
        "features", "features = frozen encoder, cached pooled features + a small head; finetune = every weight; "
                    "lora = PEFT LoRA adapters + the head")
    encoder: str = opt("all-MiniLM-L6-v2", "Hugging Face encoder: a hub id (online), a local folder, or a name "
                                           "under the data root's models/")
    max_length: int = opt(64, "tokens per sentence (longer ones are cut)", ge=8, le=4096)
    pooling: Literal["mean", "cls"] = opt("mean", "sentence vector: attention-masked mean of the last hidden "
                                                  "states, or the first ([CLS]) token")
    head: Literal["logreg", "mlp"] = opt("logreg", "features: logistic regression or a 2-layer MLP head")
    head_hidden: int = opt(256, "hidden width of the MLP head", ge=1)
    head_dropout: float = opt(0.1, "dropout before the classifier head (and inside the MLP head)", ge=0, lt=1)
    train_eval: bool = opt(True, "evaluate the best checkpoint on the whole training set for results.json's train "
                                 "accuracy (false: the best epoch's running accuracy, no extra pass)")
    lora_targets: str = opt("q+v", "lora: q, k, v, o (attention output), ffn, all-linear, or module names, joined "
                                   "by + (or commas): e.g. q+v, q+k+v")
    lora_r: int = opt(8, "lora: rank r", ge=1, le=1024)
    lora_alpha: float = opt(16.0, "lora: scaling alpha (the update is scaled by alpha / r)", gt=0)
    lora_dropout: float = opt(0.1, "lora: dropout on the adapter input", ge=0, lt=1)
    use_dora: bool = opt(False, "lora: DoRA, a learned magnitude per output feature on top of the low-rank update "
                                "(adds d_out parameters per adapted layer)")
    use_rslora: bool = opt(False, "lora: rank-stabilised scaling alpha / sqrt(r) instead of alpha / r")
    modules_to_save: str = opt("", "lora: encoder modules trained whole beside the adapters, names joined by + (e.g. "
                                   "embeddings.LayerNorm); empty = none")


@dataclass
class ModelConfig(Checked):
    """Base of every model's config; the registry maps `name` to a subclass with its hyperparameters."""

    name: str = opt("mlp", "model from the registry (`dla list --models`)", choices=lambda: _models())


def default_model(task: str = "classify") -> ModelConfig:
    """The model of an experiment without a model section: the registry's default model with its own defaults.

    Image tasks get `ModelConfig.name` (mlp), task=lm the first text model (gpt). Never the bare base class: it
    names a model but holds none of its hyperparameters, and building from it fails deep inside the builder.
    """
    if task == "lm":
        from dla.models.registry import model_names

        return _model_config_class(model_names("text")[0])()
    return _model_config_class(ModelConfig.name)()


@dataclass
class ExperimentConfig(Checked):
    experiment: str = opt("", "experiment name (the YAML file's stem); names the runs/<experiment>/ folder")
    description: str = opt("", "one line for `dla list`")
    task: Literal["classify", "lm", "textcls"] = opt(
        "classify", "what the run trains: classify = image classification (Labs 1 and 3); lm = a language model "
                    "on a text corpus (section lm); textcls = sentence classification with a pretrained "
                    "encoder (section textcls)")
    seed: int = opt(0, "seeds Python, NumPy and torch; data order and splits derive from it", ge=0)
    device: str = opt("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    run_name: str = opt("", "run folder name; empty = derived from the time and seed")
    resume: bool = opt(False, "continue the run named by run_name (or the newest unfinished one) exactly")
    data: DataConfig = opt(default_factory=DataConfig, help="dataset, split, batching, augmentation")
    model: ModelConfig = opt(default_factory=default_model, help="model name and hyperparameters (none: the "
                                                                 "task's default model, with its defaults)")
    optim: OptimConfig = opt(default_factory=OptimConfig, help="optimizer")
    schedule: ScheduleConfig = opt(default_factory=ScheduleConfig, help="learning-rate schedule")
    train: TrainConfig = opt(default_factory=TrainConfig, help="training loop")
    tracking: TrackingConfig = opt(default_factory=TrackingConfig, help="logging")
    distill: DistillConfig = opt(default_factory=DistillConfig, help="knowledge distillation from a teacher run")
    lm: LMConfig = opt(default_factory=LMConfig, help="language modelling (task=lm)")
    textcls: TextClsConfig = opt(default_factory=TextClsConfig, help="text classification (task=textcls)")
    sweep: dict[str, list[Any]] = opt(default_factory=dict, help="grid for `dla sweep`: dotted key -> values")
    variants: dict[str, dict[str, Any]] = opt(
        default_factory=dict, help="named bundles of overrides; a sweep axis `variant: [name, ...]` picks one")


class _DatasetNames(list):
    """The registry's names, listed in messages; `hf:<id>` (any Hugging Face dataset) is accepted too."""

    def __contains__(self, name: object) -> bool:
        from dla.text.datasets import is_hf_name

        return super().__contains__(name) or (isinstance(name, str) and is_hf_name(name))


def _datasets() -> list[str]:
    from dla.data.registry import dataset_names
    from dla.text.datasets import text_dataset_names

    return _DatasetNames(sorted([*dataset_names(), *text_dataset_names()]))


def _models() -> list[str]:
    from dla.models.registry import model_names

    return model_names()


def _model_config_class(name: str) -> type[ModelConfig]:
    from dla.models.registry import model_config_class

    return model_config_class(name)


# --------------------------------------------------------------------------------------------------
# Parsing and validation


# Used with fullmatch: `$` would also match before a final newline, and let "name\n" through as a folder name.
_DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_RUN_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._,=+-]*")


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _unknown_key(key: str, allowed: Iterable[str]) -> ConfigError:
    allowed = sorted(allowed)
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}; allowed here: {', '.join(allowed)}")


def _coerce(key: str, value: Any, tp: Any, meta: dict[str, Any]) -> Any:
    """Check `value` against the annotation `tp`, converting only where it is lossless and obvious."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(key, value, args[0], meta)
    if origin is Literal:
        return _coerce_literal(key, value, typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping of sub-keys; got {_fmt(value)}")
        return from_dict(tp, value, prefix=key + ".")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list; got {_fmt(value)}")
        (item,) = typing.get_args(tp)
        return [_coerce(f"{key}[{i}]", v, item, {}) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping; got {_fmt(value)}")
        _, val_tp = typing.get_args(tp)
        return {str(k): _coerce(f"{key}.{k}", v, val_tp, {}) for k, v in value.items()}
    if tp is Any:
        return value
    if tp in _SCALARS:
        return _SCALARS[tp](key, value, meta)
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")  # a bug in a schema, not user input


def _coerce_literal(key: str, value: Any, allowed: tuple[Any, ...]) -> Any:
    if isinstance(value, bool) and all(isinstance(a, str) for a in allowed):
        # YAML 1.1 reads on/off/yes/no as booleans; give them back their spelling.
        value = next((a for a in allowed if a in (("on", "yes", "true") if value else ("off", "no", "false"))), value)
    if value not in allowed:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(map(str, allowed))}; got {_fmt(value)}")
    return value


def _coerce_bool(key: str, value: Any, meta: dict[str, Any]) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"config key '{key}' must be true or false; got {_fmt(value)}")
    return value


def _coerce_int(key: str, value: Any, meta: dict[str, Any]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"config key '{key}' must be an integer; got {_fmt(value)}")
    return _check_range(key, value, meta)


def _coerce_float(key: str, value: Any, meta: dict[str, Any]) -> float:
    if isinstance(value, str):
        value = _parse_float(key, value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"config key '{key}' must be a number; got {_fmt(value)}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"config key '{key}' must be a finite number; got {value}")
    return _check_range(key, value, meta)


def _coerce_str(key: str, value: Any, meta: dict[str, Any]) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"config key '{key}' must be a string; got {_fmt(value)}")
    choices = meta.get("choices")
    if choices is not None:
        allowed = choices() if callable(choices) else list(choices)  # a list, or a list that accepts more
        if value not in allowed:
            close = difflib.get_close_matches(value, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"config key '{key}' = {_fmt(value)} is not known{hint}; "
                              f"choose one of: {', '.join(allowed)}")
    return value


_SCALARS: dict[Any, Callable[[str, Any, dict[str, Any]], Any]] = {
    bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_str}


def _parse_float(key: str, text: str) -> float:
    """Accept '1e-3' (which YAML 1.1 leaves as a string) and fractions such as '8/255'."""
    text = text.strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"config key '{key}' must be a number; got {text!r}") from None


def _check_range(key: str, value: float, meta: dict[str, Any]) -> Any:
    checks = [("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
              ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")]
    for name, ok, sym in checks:
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"config key '{key}' must be {sym} {bound}; got {value}")
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a plain mapping, rejecting unknown keys and bad values."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<top>'}' must be a mapping; got {_fmt(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            raise _unknown_key(prefix + str(key), fields)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            continue
        key = prefix + name
        tp = hints[name]
        if tp is ModelConfig:
            kwargs[name] = _parse_model(key, data[name])
        else:
            kwargs[name] = _coerce(key, data[name], tp, dict(f.metadata))
    return cls(**kwargs)


def _parse_model(key: str, value: Any) -> ModelConfig:
    if value is None:  # `model:` with nothing under it, as if the section were left out
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"config key '{key}' must be a mapping with a 'name'; got {_fmt(value)}")
    name = value.get("name", ModelConfig.name)
    base_meta = dict(next(f for f in dataclasses.fields(ModelConfig) if f.name == "name").metadata)
    name = _coerce(f"{key}.name", name, str, base_meta)
    return from_dict(_model_config_class(name), {**value, "name": name}, prefix=key + ".")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, YAML-safe mapping of a config (the inverse of `from_dict`)."""
    return dataclasses.asdict(cfg)


def help_lines(cls: type, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) for every field: the source of `dla run NAME --help-config`."""
    out: list[tuple[str, Any, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and tp is not ModelConfig:
            out.extend(help_lines(tp, prefix + f.name + "."))
            continue
        default = f.default if f.default is not _MISSING else (
            f.default_factory() if f.default_factory is not _MISSING else None)
        out.append((prefix + f.name, default, f.metadata.get("help", "")))
    return out


# --------------------------------------------------------------------------------------------------
# YAML files, overrides and the experiment catalogue


# What one YAML document may expand to once its aliases are followed: experiment files and run configs hold a
# few hundred values. Aliases are shared, not copied, by the loader, so an alias bomb ("billion laughs", 515
# bytes, 10^9 leaves) loads in microseconds and only explodes in whatever walks it next (validation, dumping,
# flattening for a report); the bound is checked right after loading, without expanding anything.
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 64


def _expanded_size(data: Any, source: str) -> int:
    """Values `data` holds with every alias expanded, counted in O(distinct nodes) by memoising shared ones."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: Any, depth: int) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise ConfigError(f"{source}: refused a YAML document that contains itself (a recursive alias); "
                              "configs hold plain values only")
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"{source}: refused a YAML document nested deeper than {MAX_YAML_DEPTH} levels")
        open_.add(key)
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_YAML_NODES:
                raise ConfigError(f"{source}: refused a YAML document that expands to more than {MAX_YAML_NODES:,} "
                                  "values (aliases of aliases: a 'billion laughs' bomb?); configs are small")
        open_.discard(key)
        sizes[key] = total
        return total

    return size(data, 0)


def safe_load_yaml(text: str, source: str) -> Any:
    """A YAML document through the safe loader, bounded in what it expands to; any problem is a `ConfigError`."""
    data = _safe_load(text, source)
    _expanded_size(data, source)
    return data


def _safe_load(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except RecursionError:  # thousands of nested brackets: the composer recurses once per level
        raise ConfigError(f"{source}: refused a YAML document nested too deeply") from None
    except yaml.constructor.ConstructorError as exc:
        # Python object tags and the like: refused, never constructed.
        raise ConfigError(f"{source}: refused a YAML tag the safe loader does not allow "
                          f"({exc.problem}); configs hold plain values only") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: malformed YAML{where}: {problem}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """'optim.lr=0.01' -> ('optim.lr', 0.01). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. optim.lr=0.01)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or not all(part.isidentifier() for part in key.split(".")):
        raise ConfigError(f"override {text!r} has a malformed key; use dotted names such as train.epochs=5")
    return key, safe_load_yaml(raw, f"override {key}") if raw.strip() else ""


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override '{key}': '{'.'.join(parts[: i + 1])}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def experiments_dir() -> Path:
    return Path(str(resources.files("dla") / "experiments"))


def experiment_names() -> list[str]:
    return sorted(p.stem for p in experiments_dir().glob("*.yaml"))


def read_experiment(name_or_path: str) -> dict[str, Any]:
    """The raw mapping of a packaged experiment (by name) or of a YAML file (by path)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        stem = path.stem
    else:
        path = experiments_dir() / f"{name_or_path}.yaml"
        stem = name_or_path
        if not path.is_file():
            names = experiment_names()
            close = difflib.get_close_matches(name_or_path, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown experiment {name_or_path!r}{hint}; `dla list` shows the catalogue "
                              "(or pass a path to a .yaml file)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read experiment file {path}: {exc}") from None
    data = safe_load_yaml(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys; got {type(data).__name__}")
    data.setdefault("experiment", stem)
    return data


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from a file dla wrote (a run's config.yaml), through the same safe loader: a file
    edited by hand or by someone hostile is a one-line `ConfigError`, never a traceback or constructed code."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    data = safe_load_yaml(text, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys; got {type(data).__name__}")
    return data


def check_folder_name(what: str, name: str) -> str:
    """`name` is joined under the output directory, so it must be a plain folder name that cannot climb out
    of it (no slashes, no leading dot, not absolute)."""
    if not _RUN_NAME_RE.fullmatch(name):
        raise ConfigError(f"{what} {name!r} must be a plain folder name (letters, digits, . _ , = + -; no slashes, "
                          "not starting with a dot): it names a folder under --out")
    return name


def load_config(name_or_path: str, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Experiment YAML + `a.b=value` overrides -> a validated `ExperimentConfig`."""
    data = read_experiment(name_or_path)
    parsed = [parse_override(text) for text in overrides]
    new_model = next((v for k, v in reversed(parsed) if k == "model.name"), None)
    if data.get("model") is None:  # no model section: the task's default model, which model.* overrides then tune
        task = next((v for k, v in reversed(parsed) if k == "task"), data.get("task", "classify"))
        data["model"] = {"name": default_model(task).name}
    if isinstance(data.get("model"), dict) and new_model not in (None, data["model"].get("name", "mlp")):
        # Another model: the experiment's hyperparameters were for its own model, so start from the new
        # model's defaults (plus whatever other model.* overrides say).
        data["model"] = {"name": new_model}
    for key, value in parsed:
        set_dotted(data, key, value)
    return validate(from_dict(ExperimentConfig, data))


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Cross-field checks that a single field's range cannot express."""
    if not _DEVICE_RE.fullmatch(cfg.device):
        raise ConfigError(f"config key 'device' = {cfg.device!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    if cfg.run_name and not _RUN_NAME_RE.fullmatch(cfg.run_name):
        raise ConfigError(f"config key 'run_name' = {cfg.run_name!r} must be a plain folder name "
                          "(letters, digits, . _ , = + -; no slashes)")
    if not _RUN_NAME_RE.fullmatch(cfg.experiment):
        raise ConfigError(f"experiment name {cfg.experiment!r} must be a plain folder name")
    _check_task_data(cfg)
    if cfg.task == "classify" and cfg.data.val_size < 1:
        raise ConfigError("config key 'data.val_size' must be >= 1; got 0 (a run picks its best checkpoint and "
                          "stops early on its validation split)")
    aug = cfg.data.augment
    if cfg.distill.teacher and cfg.distill.teacher_outputs == "cached" and (aug.flip or aug.crop_padding):
        raise ConfigError("distill.teacher_outputs=cached needs the same images every epoch, but augmentation is on; "
                          "use distill.teacher_outputs=online, or data.augment.flip=false "
                          "data.augment.crop_padding=0")
    from dla.train.objectives import check_objectives

    check_objectives(cfg)  # two training objectives at once: each objective declares what it excludes
    adv = cfg.train.adversarial
    if adv.method != "none" and adv.eps == 0:
        raise ConfigError(f"train.adversarial.method={adv.method} needs train.adversarial.eps > 0 (e.g. 0.1 on "
                          "MNIST, 8/255 on CIFAR-10); eps=0 would train on the clean images twice")
    oe = cfg.train.outlier_exposure
    if oe.dataset == cfg.data.name and oe.path == cfg.data.path:
        raise ConfigError(f"train.outlier_exposure.dataset={oe.dataset!r} is the training set itself: its images "
                          "would be pushed to uniform and to their labels at once (with data.classes too: its "
                          "auxiliary images are all classes); pick another dataset (e.g. noise)")
    if oe.dataset == "imagefolder" and not oe.path:
        raise ConfigError("train.outlier_exposure.dataset=imagefolder needs train.outlier_exposure.path (a folder "
                          "with train/<class>/ images)")
    return cfg


def _check_task_data(cfg: ExperimentConfig) -> None:
    """Each task reads its own kind of dataset: images, a text corpus, or labelled sentences."""
    from dla.text.datasets import TEXT_DATASETS, text_dataset

    text = text_dataset(cfg.data.name)
    wanted = text.task if text else "classify"
    if wanted != cfg.task:
        kinds = {"classify": "an image dataset", "lm": "a text corpus", "textcls": "a sentence dataset"}
        names = [n for n, d in TEXT_DATASETS.items() if d.task == cfg.task] if cfg.task != "classify" else []
        hint = f" such as {', '.join(names)}" if names else " (`dla list --datasets`)"
        raise ConfigError(f"data.name={cfg.data.name!r} is {kinds[wanted]}, but task={cfg.task} needs "
                          f"{kinds[cfg.task]}{hint}")


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)
