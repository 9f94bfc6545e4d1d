"""Config validation: every bad key or value stops with one message naming it."""

import pytest
import yaml

from pipeline.config import (DEFAULT_CONFIG_PATH, ConfigError, Run, format_corruption, iter_runs,
                             load_config, load_schema, validate_config)
from pipeline.datasets import DATASETS
from pipeline.models import MODELS
from pipeline.probes import PROBES


def test_default_config_is_valid_and_filled():
    config = load_config(DEFAULT_CONFIG_PATH)
    assert config["datasets"] == ["digits"]
    assert config["train"]["checkpoints"]["early_until"] == 20
    assert config["activations"]["compression"] is None
    assert len(config["corruptions"]) >= 3


def test_empty_config_gets_schema_defaults():
    config = validate_config({})
    assert config["models"] == ["mlp"] and config["train"]["max_epochs"] == 500
    assert config["probes"]["fit_labels"] == ["corrupted", "true"]


def test_unknown_key_names_key_and_allowed_keys():
    with pytest.raises(ConfigError) as err:
        validate_config({"train": {"max_epoch": 3}})
    msg = str(err.value)
    assert "max_epoch" in msg and "max_epochs" in msg and "'train'" in msg


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match="corruption_degrees"):
        validate_config({"corruption_degrees": [0.1]})


@pytest.mark.parametrize("value", [1.5, -0.1])
def test_corruption_outside_unit_interval(value):
    with pytest.raises(ConfigError, match=r"corruptions\.0"):
        validate_config({"corruptions": [value]})


def test_unknown_model_lists_allowed_models():
    with pytest.raises(ConfigError) as err:
        validate_config({"models": ["vgg"]})
    assert "vgg" in str(err.value) and "resnet18" in str(err.value) and "mlp" in str(err.value)


def test_unknown_dataset_lists_allowed_datasets():
    with pytest.raises(ConfigError) as err:
        validate_config({"datasets": ["imagenet"]})
    assert "imagenet" in str(err.value) and "tiny_imagenet" in str(err.value)


def test_unknown_probe_param_is_caught_before_any_job():
    with pytest.raises(ConfigError, match="probes.settings"):
        validate_config({"probes": {"settings": [{"name": "masc", "params": {"varience": 0.9}}]}})


def test_yaml_true_label_source_is_accepted():
    config = validate_config(yaml.safe_load("probes: {fit_labels: [corrupted, true]}"))
    assert config["probes"]["fit_labels"] == ["corrupted", "true"]


def test_schema_enums_match_the_registries():
    """The schema lists the registries' names; a new model/dataset/probe must be added to both."""
    props = load_schema()["properties"]
    assert set(props["datasets"]["items"]["enum"]) == set(DATASETS)
    assert set(props["models"]["items"]["enum"]) == set(MODELS)
    assert set(props["probes"]["properties"]["settings"]["items"]["properties"]["name"]["enum"]) == set(PROBES)


def test_runs_and_paths():
    config = validate_config({"corruptions": [0.0, 0.8], "seeds": [0, 1]})
    runs = list(iter_runs(config))
    assert len(runs) == 4
    assert Run("digits", "mlp", 0.8, 1).path == "runs/digits/mlp/c0.8/s1/standard"
    assert format_corruption(0.0) == "0" and format_corruption(0.25) == "0.25"


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
