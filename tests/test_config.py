"""Config parsing: strict validation, overrides, YAML safety; fuzzed for tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dla.config import (
    ExperimentConfig,
    experiment_names,
    from_dict,
    help_lines,
    load_config,
    parse_override,
    to_dict,
)
from dla.errors import ConfigError
from dla.models import model_names
from dla.models.mlp import MLPConfig


def test_every_packaged_experiment_loads() -> None:
    names = experiment_names()
    assert "mnist_mlp" in names
    for name in names:
        cfg = load_config(name)
        assert cfg.experiment == name
        assert cfg.description, f"{name} needs a description for `dla list`"


def test_overrides_are_typed_and_nested() -> None:
    cfg = load_config("mnist_mlp", ["optim.lr=1e-3", "train.epochs=3", "model.residual=true",
                                    "data.augment.flip=true", "schedule.warmup_epochs=1/2"])
    assert cfg.optim.lr == pytest.approx(1e-3)  # YAML 1.1 leaves '1e-3' a string; we parse it
    assert cfg.train.epochs == 3
    assert isinstance(cfg.model, MLPConfig) and cfg.model.residual is True
    assert cfg.data.augment.flip is True
    assert cfg.schedule.warmup_epochs == 0.5


def test_resolved_config_round_trips() -> None:
    cfg = load_config("mnist_mlp", ["model.depth=3"])
    again = from_dict(ExperimentConfig, yaml.safe_load(yaml.safe_dump(to_dict(cfg))))
    assert again == cfg


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lrr=0.1", "unknown config key 'optim.lrr' (did you mean 'lr'?)"),
        ("optim.lr=-0.1", "config key 'optim.lr' must be > 0; got -0.1"),
        ("optim.lr=fast", "config key 'optim.lr' must be a number"),
        ("train.epochs=abc", "config key 'train.epochs' must be an integer; got 'abc'"),
        ("train.epochs=2.5", "must be an integer"),
        ("train.epochs=0", "must be >= 1"),
        ("model.residual=maybe", "must be true or false"),
        ("optim.name=adam", "must be one of sgd, adamw"),
        ("data.name=mnst", "(did you mean 'mnist'?)"),
        ("model.name=resnet999", "model.name"),
        ("model.width=-4", "config key 'model.width' must be >= 1"),
        ("model.heads=4", "unknown config key 'model.heads'"),
        ("device=gpu", "is not a device"),
        ("run_name=../../etc", "must be a plain folder name"),
        ("train.label_smoothing=1.0", "must be < 1"),
        ("optim.lr=.nan", "finite"),
        ("data=3", "must be a mapping"),
        ("optim.lr.x=1", "is a value, not a section"),
        ("noequals", "key=value"),
    ],
)
def test_bad_values_are_named(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("mnist_mlp", [override])
    msg = str(err.value)
    assert expected in msg
    assert "\n" not in msg


def test_unknown_key_lists_allowed_keys() -> None:
    with pytest.raises(ConfigError, match=r"allowed here: .*batch_size"):
        load_config("mnist_mlp", ["data.batchsize=3"])


def test_unknown_experiment_suggests() -> None:
    with pytest.raises(ConfigError, match=r"unknown experiment 'mnist_mlpp' \(did you mean 'mnist_mlp'\?\)"):
        load_config("mnist_mlpp")


def test_yaml_python_tags_are_refused_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.yaml"
    bad.write_text(f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="refused a YAML tag"):
        load_config(str(bad))
    assert not marker.exists()


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\ndata: [unclosed\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+"):
        load_config(str(bad))


def test_yaml_file_by_path(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("description: mine\ndata: {name: fashion_mnist}\nmodel: {name: mlp, width: 32}\n")
    cfg = load_config(str(f))
    assert cfg.experiment == "mine" and cfg.data.name == "fashion_mnist" and cfg.model.width == 32


NO_MODEL = "description: x\ndata: {name: mnist, limit_train: 1000, val_size: 200}\ntrain: {epochs: 1}\n"


def test_no_model_section_means_the_default_model_with_its_defaults(tmp_path: Path) -> None:
    from dla.models import ModelInputs, build_model

    f = tmp_path / "nomodel.yaml"
    f.write_text(NO_MODEL)
    cfg = load_config(str(f))
    assert type(cfg.model) is MLPConfig and cfg.model == MLPConfig()
    assert build_model(cfg.model, ModelInputs((1, 28, 28), 10, (0.1307,), (0.3081,)))(torch.rand(2, 1, 28, 28)).shape \
        == (2, 10)
    assert load_config(str(f), ["model.width=8"]).model == MLPConfig(width=8)  # overrides tune the default model
    f.write_text(NO_MODEL + "model:\n")  # an empty section is no section
    assert load_config(str(f)).model == MLPConfig()
    assert type(from_dict(ExperimentConfig, {}).model) is MLPConfig and type(ExperimentConfig().model) is MLPConfig


def test_no_model_section_in_a_language_model_experiment_is_the_gpt(tmp_path: Path) -> None:
    from dla.models.gpt import GPTConfig

    f = tmp_path / "lm.yaml"
    f.write_text("task: lm\ndata: {name: dante_inferno}\n")
    assert load_config(str(f)).model == GPTConfig()
    assert load_config(str(f), ["model.n_layer=1"]).model == GPTConfig(n_layer=1)
    f.write_text("data: {name: dante_inferno}\n")
    assert load_config(str(f), ["task=lm"]).model == GPTConfig()


@pytest.mark.parametrize("name", model_names())
def test_every_model_builds_from_a_yaml_that_names_only_the_model(tmp_path: Path, name: str) -> None:
    from dla.models import ModelInputs, TextInputs, build_model, model_config_class
    from dla.models.registry import model_spec

    text = model_spec(name).modality == "text"
    f = tmp_path / f"{name}.yaml"
    f.write_text(f"model: {{name: {name}}}\n" + ("task: lm\ndata: {name: dante_inferno}\n" if text else ""))
    cfg = load_config(str(f))
    assert cfg.model == model_config_class(name)()  # every hyperparameter at the model's own default
    torch.manual_seed(0)
    if text:
        model = build_model(cfg.model, TextInputs(vocab_size=50, block_size=cfg.lm.block_size))
        assert model(torch.randint(0, 50, (2, 8))).shape[-1] == 50
    else:
        model = build_model(cfg.model, ModelInputs((3, 32, 32), 10, (0.5,) * 3, (0.25,) * 3))
        assert model.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_parse_override_values() -> None:
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("x=true") == ("x", True)
    assert parse_override("s=hello world") == ("s", "hello world")


def test_every_field_has_help() -> None:
    for key, _default, text in help_lines(ExperimentConfig) + help_lines(MLPConfig, "model."):
        assert text, f"{key} has no help text"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=30), max_size=4))
def test_fuzzed_overrides_never_traceback(overrides: list[str]) -> None:
    try:
        load_config("mnist_mlp", overrides)
    except ConfigError as exc:
        assert "\n" not in str(exc)


KEYS = ["seed", "optim.lr", "train.epochs", "model.width", "model.depth", "data.val_size", "model.norm",
        "data.augment.crop_padding", "train.early_stopping.metric", "schedule.name", "device"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KEYS), st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.booleans(),
                                         st.text(max_size=12), st.none()))
def test_fuzzed_values_for_real_keys(key: str, value: object) -> None:
    try:
        load_config("mnist_mlp", [f"{key}={value}"])
    except ConfigError as exc:
        assert "\n" not in str(exc)


def test_yaml_on_off_reach_string_choices() -> None:
    # YAML 1.1 reads `off` as False; a field whose choices are strings gets the word back.
    assert load_config("mnist_mlp", ["tracking.progress=off"]).tracking.progress == "off"
    assert load_config("mnist_mlp", ["tracking.progress=on"]).tracking.progress == "on"


def test_configs_built_in_python_are_checked_as_yaml_is() -> None:
    from dla.config import AdversarialConfig, DataConfig, TrainConfig
    from dla.models.cnn import CNNConfig

    with pytest.raises(ConfigError, match=r"'AdversarialConfig\.eps' must be <= 1; got 5\.0"):
        AdversarialConfig(eps=5.0)
    with pytest.raises(ConfigError, match=r"'AdversarialConfig\.steps' must be >= 1; got -3"):
        AdversarialConfig(method="pgd", steps=-3)
    with pytest.raises(ConfigError, match=r"'AdversarialConfig\.method' must be one of none, fgsm, pgd"):
        AdversarialConfig(method="cw")
    with pytest.raises(ConfigError, match=r"'DataConfig\.name' = 'mnsit' is not known \(did you mean 'mnist'\?\)"):
        DataConfig(name="mnsit")
    with pytest.raises(ConfigError, match=r"'CNNConfig\.depth' must be an integer; got '9'"):
        CNNConfig(depth="9")
    with pytest.raises(ConfigError, match=r"'TrainConfig\.adversarial' must be a mapping"):
        TrainConfig(adversarial=3)
    assert AdversarialConfig(eps="8/255").eps == 8 / 255  # converted as YAML's fractions are
    assert TrainConfig(adversarial={"method": "fgsm"}).adversarial.method == "fgsm"  # a mapping becomes the section
