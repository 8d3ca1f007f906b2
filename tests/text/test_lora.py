"""LoRA: short target names map to the encoder's Linear layers, the trainable count matches the formula, and a
name that matches nothing is refused instead of silently training less."""

from __future__ import annotations

from pathlib import Path

import pytest

from dla.errors import ConfigError

from ..conftest import DATA_ROOT, one_line_error
from .conftest import needs_rt

pytest.importorskip("peft")

HEAD = 32 * 2 + 2  # Linear(32, 2)
# Hand-counted for the tiny BERT (2 layers, hidden 32, FFN 64): r * (d_in + d_out) per adapted Linear.
PER_LAYER = {"q": 64, "k": 64, "v": 64, "o": 64, "ffn": (32 + 64) + (64 + 32)}  # times r


@pytest.mark.parametrize(("targets", "roles"), [
    ("q", ["q"]), ("q+v", ["q", "v"]), ("q,k,v", ["q", "k", "v"]), ("o", ["o"]), ("ffn", ["ffn"]),
    ("all-linear", ["q", "k", "v", "o", "ffn"]),
])
@pytest.mark.parametrize("r", [4, 8])
def test_trainable_count_is_r_times_din_plus_dout_plus_head(tiny_bert: Path, targets: str, roles: list[str],
                                                            r: int):
    from dla.text.encoders import TextClassifier, load_encoder
    from dla.text.lora import apply_lora, check_trainable, plan_lora, trainable_parameters

    _, encoder = load_encoder(str(tiny_bert), DATA_ROOT)
    encoder.pooler = None
    plan = plan_lora(encoder, targets, r)
    model = TextClassifier(apply_lora(encoder, plan, alpha=16, dropout=0.0), 2)
    expected = 2 * r * sum(PER_LAYER[x] for x in roles) + HEAD
    assert trainable_parameters(model) == expected
    line = check_trainable(model, plan, model.head)
    assert f"trainable parameters {expected:,}" in line and "(checked)" in line
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in model.named_modules() if n.endswith(".lora_A")}
    assert len(adapted) == len(plan.modules) == 2 * (len(roles) + (roles.count("ffn")))


def test_ffn_does_not_take_the_attention_output(tiny_bert: Path):
    from dla.text.encoders import load_encoder
    from dla.text.lora import plan_lora

    _, encoder = load_encoder(str(tiny_bert), DATA_ROOT)
    names = plan_lora(encoder, "ffn", 4).modules
    assert all("attention" not in n for n in names)
    assert sorted({n.split(".", 3)[-1] for n in names}) == ["intermediate.dense", "output.dense"]


def test_a_target_that_matches_nothing_is_refused(tiny_bert: Path):
    from dla.text.encoders import load_encoder
    from dla.text.lora import plan_lora

    _, encoder = load_encoder(str(tiny_bert), DATA_ROOT)
    with pytest.raises(ConfigError, match=r"'q_proj' matches no Linear layer .*silently train less"):
        plan_lora(encoder, "q+q_proj", 8)
    with pytest.raises(ConfigError, match="names no module"):
        plan_lora(encoder, "+", 8)
    assert len(plan_lora(encoder, "attention.self.query", 4).modules) == 2  # a module name works too


@needs_rt
def test_refusal_through_the_cli_creates_no_run(tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    one_line_error(capsys, ["run", "textcls_lora", f"textcls.encoder={tiny_bert}", "textcls.lora_targets=q+wq",
                            "--out", str(tmp_path)], "'wq' matches no Linear layer", "use q, k, v")
    assert not list(tmp_path.rglob("config.yaml"))


@needs_rt
def test_unknown_encoder_offline_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    one_line_error(capsys, ["run", "textcls_finetune", "textcls.encoder=distilbert-base-uncased", "--out",
                            str(tmp_path)], "encoder 'distilbert-base-uncased' is not available offline")
    assert not list(tmp_path.rglob("config.yaml"))


@pytest.mark.parametrize("r", [4, 8])
def test_dora_adds_one_magnitude_per_output_feature(tiny_bert: Path, r: int):
    from dla.text.encoders import TextClassifier, load_encoder
    from dla.text.lora import apply_lora, check_trainable, plan_lora, trainable_parameters

    _, encoder = load_encoder(str(tiny_bert), DATA_ROOT)
    encoder.pooler = None
    plan = plan_lora(encoder, "q+v", r, use_dora=True)
    model = TextClassifier(apply_lora(encoder, plan, alpha=16, dropout=0.0), 2)
    expected = 2 * 2 * (r * 64 + 32) + HEAD  # 2 layers x (q, v): r * (32 + 32) + a 32-wide magnitude
    assert trainable_parameters(model) == expected
    assert sum(n.endswith("lora_magnitude_vector.default.weight") for n, _ in model.named_parameters()) == 4
    assert check_trainable(model, plan, model.head).startswith("DoRA q+v")


def test_rslora_changes_the_scaling_not_the_count(tiny_bert: Path):
    from dla.text.encoders import TextClassifier, load_encoder
    from dla.text.lora import apply_lora, check_trainable, plan_lora, trainable_parameters

    scaling, counts = {}, {}
    for rs in (False, True):
        _, encoder = load_encoder(str(tiny_bert), DATA_ROOT)
        encoder.pooler = None
        plan = plan_lora(encoder, "q", 16, use_rslora=rs)
        model = TextClassifier(apply_lora(encoder, plan, alpha=8, dropout=0.25), 2)
        check_trainable(model, plan, model.head)
        counts[rs] = trainable_parameters(model)
        lora = next(m for m in model.modules() if hasattr(m, "lora_A") and "default" in m.lora_A)
        scaling[rs] = lora.scaling["default"]
        assert lora.lora_dropout["default"].p == 0.25  # lora_dropout reaches the adapter
    assert scaling == {False: 8 / 16, True: 8 / 4}  # alpha / r against alpha / sqrt(r)
    assert counts[False] == counts[True] == 2 * 16 * 64 + HEAD


def test_modules_to_save_train_whole_and_are_counted(tiny_bert: Path):
    from dla.text.encoders import TextClassifier, load_encoder
    from dla.text.lora import apply_lora, check_trainable, plan_lora, trainable_parameters

    _, encoder = load_encoder(str(tiny_bert), DATA_ROOT)
    encoder.pooler = None
    # The embedding LayerNorm (32 weights + 32 biases) and both layers' FFN-output LayerNorms: 3 x 64.
    plan = plan_lora(encoder, "q", 4, modules_to_save="embeddings.LayerNorm+output.LayerNorm")
    assert len(plan.saved) == 1 + 2 * 2  # output.LayerNorm is also attention.output.LayerNorm, in both layers
    model = TextClassifier(apply_lora(encoder, plan, alpha=16, dropout=0.0), 2)
    expected = 2 * 4 * 64 + 5 * 64 + HEAD
    assert trainable_parameters(model) == expected
    assert "modules_to_save 320" in check_trainable(model, plan, model.head)
    _, encoder = load_encoder(str(tiny_bert), DATA_ROOT)  # PEFT wrapped the first one in place
    with pytest.raises(ConfigError, match="'nowhere' names no module"):
        plan_lora(encoder, "q", 4, modules_to_save="nowhere")
    with pytest.raises(ConfigError, match="either adapted or trained whole"):
        plan_lora(encoder, "q", 4, modules_to_save="attention.self")


def test_lora_options_need_method_lora():
    from dla.config import load_config
    from dla.text.textcls import _check_config

    with pytest.raises(ConfigError, match=r"textcls.use_dora is a LoRA option; it needs textcls.method=lora"):
        _check_config(load_config("textcls_finetune", ["textcls.use_dora=true"]))
    _check_config(load_config("textcls_lora", ["textcls.use_dora=true", "textcls.use_rslora=true"]))
