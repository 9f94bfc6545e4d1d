"""Config validation: every bad key or value stops with one message naming it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config, validate_config
from pipeline.core.config import DEFAULT_CONFIG_PATH, ConfigError, Run, format_corruption, iter_runs, load_schema
from pipeline.core.datasets import DATASETS
from pipeline.core.models import MODELS
from pipeline.core.user_data import BUILTIN_DATASETS
from pipeline.core.user_models import BUILTIN_MODELS
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
    # the first branch lists the built-in names; the second admits a user's own (data.custom,
    # train.custom_models), checked against the config in pipeline.config
    assert set(props["datasets"]["items"]["anyOf"][0]["enum"]) == BUILTIN_DATASETS <= set(DATASETS)
    assert set(props["models"]["items"]["anyOf"][0]["enum"]) == BUILTIN_MODELS <= set(MODELS)
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


# ----------------------------------------------------------------------------- before the first job

@pytest.mark.parametrize("config, key", [
    ({"corruptions": [0.0, float("nan")]}, "corruptions.1"),
    ({"corruptions": [float("inf")]}, "corruptions.0"),
    ({"train": {"overrides": {"mlp": {"lr": float("nan")}}}}, "train.overrides.mlp.lr"),
    ({"probes": {"settings": [{"name": "masc", "params": {"variance": float("inf")}}]}},
     "probes.settings.0.params.variance"),
])
def test_non_finite_numbers_are_refused(config, key):
    with pytest.raises(ConfigError, match="finite") as err:
        validate_config(config)
    assert f"'{key}'" in str(err.value)


def test_yaml_nan_corruption_is_refused():
    with pytest.raises(ConfigError, match=r"corruptions\.0.*finite"):
        validate_config(yaml.safe_load("corruptions: [.nan]"))


def test_corruptions_with_the_same_run_folder_are_refused():
    assert format_corruption(0.8) == format_corruption(0.8000001) == "0.8"
    with pytest.raises(ConfigError) as err:
        validate_config({"corruptions": [0.0, 0.8, 0.8000001]})
    msg = str(err.value)
    assert "'corruptions'" in msg and "0.8 " in msg and "0.8000001" in msg and "c0.8" in msg
    # alone, a degree finer than its folder name is refused too: its rows would say 0.333333
    with pytest.raises(ConfigError, match="0.33333333 would run as 0.333333"):
        validate_config({"corruptions": [0.33333333]})


@pytest.mark.parametrize("config, key, name", [
    ({"probes": {"layers": ["fc9"]}}, "probes.layers", "fc9"),
    # fc4 is an MLP layer, not a CNN one: probes.layers applies to every model of the grid
    ({"models": ["mlp", "cnn"], "probes": {"layers": ["fc4"]}}, "probes.layers", "fc4"),
    # block1 is a CNN probe layer, but "paper" does not persist it
    ({"models": ["cnn"], "activations": {"layers": "paper"}, "probes": {"layers": ["block1"]}},
     "probes.layers", "block1"),
    ({"activations": {"layers": ["fc1", "flat"]}}, "activations.layers", "flat"),
    ({"models": ["mlp", "cnn"], "activations": {"layers": ["fc4"]}}, "activations.layers", "fc4"),
    ({"activations": {"layers": {"cnn": ["fc9"]}}}, "activations.layers.cnn", "fc9"),
    ({"activations": {"layers": []}}, "activations.layers", "empty"),
    ({"models": ["mlp", "alexnet"],
      "transfer": {"relabel_retrain": {"enabled": True, "layers": ["conv5"]}}},
     "transfer.relabel_retrain.layers", "conv5"),
])
def test_unknown_or_unpersisted_layers_are_refused(config, key, name):
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    msg = str(err.value)
    assert f"'{key}'" in msg and name in msg


@pytest.mark.parametrize("config", [
    {"models": ["mlp", "cnn"], "activations": {"layers": "paper"}, "probes": {"layers": ["fc1"]}},
    {"models": ["mlp", "cnn"], "activations": {"layers": {"cnn": ["flat", "fc3"]}},
     "probes": {"layers": ["fc3"]}},
    {"models": ["mlp"], "activations": {"layers": ["fc2", "fc4"]}, "probes": {"layers": ["fc4"]}},
    {"models": ["mlp", "alexnet"], "transfer": {"relabel_retrain": {"enabled": True, "layers": ["fc1"]}}},
])
def test_valid_layer_choices_are_accepted(config):
    validate_config(config)


def test_storage_epochs_that_select_no_checkpoint_are_refused():
    with pytest.raises(ConfigError) as err:
        validate_config({"train": {"max_epochs": 30}, "storage": {"epochs": [40, 100]}})
    msg = str(err.value)
    assert "'storage.epochs'" in msg and "max_epochs" in msg and "30" in msg


def test_storage_epochs_off_the_schedule_but_within_max_epochs_are_accepted():
    # epoch 7 is not on the schedule, but a run that reaches the target at epoch 7 saves it
    config = validate_config({"train": {"max_epochs": 30}, "storage": {"epochs": [7, 40]}})
    assert config["storage"]["epochs"] == [7, 40]


def test_storage_epochs_that_miss_the_intervened_runs_are_refused():
    config = {"train": {"max_epochs": 30, "checkpoints": {"late_every": 5}},
              "storage": {"epochs": [0, 4]},
              "transfer": {"intervention": {"enabled": True, "epoch": 10, "extra_epochs": 10}}}
    with pytest.raises(ConfigError, match=r"'storage.epochs'.*intervened runs"):
        validate_config(config)
    config["storage"]["epochs"] = [0, 4, 12]
    validate_config(config)


def test_unknown_knn_metric_is_caught_before_any_job():
    """Needs make_probe('knn', metric='bogus') to raise ValueError (pipeline.probes)."""
    with pytest.raises(ConfigError, match=r"probes\.settings\[0\].*knn"):
        validate_config({"probes": {"settings": [{"name": "knn", "params": {"metric": "bogus"}}]}})


def test_string_values_are_read_by_the_schema_type():
    """`snakemake --config` passes nested values as strings (YAML base loader)."""
    config = validate_config({
        "corruptions": ["0.5", "0.8"], "seeds": ["1"],
        "train": {"max_epochs": "3", "dropout": "true", "num_threads": "null",
                  "overrides": {"mlp": {"lr": "1e-3"}}},
        "pairs": "null", "activations": {"layers": "null"}, "storage": {"epochs": ["0", "2"]},
        "probes": {"fit_labels": ["corrupted", "true"],
                   "settings": [{"name": "knn", "params": {"n_neighbors": "3", "metric": "cosine"}}]},
    })
    assert config["corruptions"] == [0.5, 0.8] and config["seeds"] == [1]
    assert config["train"]["max_epochs"] == 3 and config["train"]["dropout"] is True
    assert config["train"]["num_threads"] is None and config["pairs"] is None
    assert config["train"]["overrides"]["mlp"]["lr"] == 0.001
    assert config["activations"]["layers"] is None and config["storage"]["epochs"] == [0, 2]
    assert config["probes"]["fit_labels"] == ["corrupted", "true"]
    assert config["probes"]["settings"][0]["params"] == {"n_neighbors": 3, "metric": "cosine"}
    assert validate_config({"activations": {"layers": "paper"}})["activations"]["layers"] == "paper"


@pytest.mark.parametrize("config, key", [
    ({"corruptions": ["lots"]}, "corruptions.0"),
    ({"train": {"max_epochs": "3.5"}}, "train.max_epochs"),
    ({"train": {"dropout": "maybe"}}, "train.dropout"),
])
def test_strings_of_the_wrong_type_are_still_refused(config, key):
    with pytest.raises(ConfigError, match=rf"'{key}'"):
        validate_config(config)


def test_broken_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train: {max_epochs: 3\n  bad: [\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "not valid YAML" in msg and "line 2" in msg and "\n" not in msg


def test_config_file_without_a_mapping_names_the_file(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=rf"{path}.*mapping"):
        load_config(path)


def test_config_that_is_a_folder_names_it(tmp_path):
    with pytest.raises(ConfigError, match=rf"{tmp_path}.*cannot be read"):
        load_config(tmp_path)


# ----------------------------------------------------------------------------- under Snakemake

def _snakemake_dry_run(workdir, *args):
    """`snakemake -n` of this repository's Snakefile in ``workdir`` (a dry run: no job runs)."""
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-s", str(repo / "Snakefile"),
           "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def workdir(tmp_path):
    """A folder with the default config/config.yaml, as a checkout has."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(DEFAULT_CONFIG_PATH.read_text())
    return tmp_path


def test_snakemake_config_overrides_are_typed(workdir):
    # the default's consistency window [0, 4] ends at a saved epoch of the default's runs; with 3 epochs
    # it must end at one of theirs (saved: 0, 3), or validation refuses it before any job
    rc, out = _snakemake_dry_run(workdir, "--config", "corruptions=[0.5]", "train={max_epochs: 3}",
                                 "seeds=[0, 1]", "dynamics={windows: [[0, 3]]}")
    assert rc == 0, out[-3000:]
    assert "c0.5/s1" in out and "c0.8" not in out


def test_snakemake_refuses_nan_corruption_before_any_job(workdir):
    rc, out = _snakemake_dry_run(workdir, "--config", "corruptions=[0.5, .nan]")
    assert rc != 0 and "invalid configuration" in out and "corruptions.1" in out and "finite" in out


def test_snakemake_names_a_broken_default_config_file(workdir):
    (workdir / "config" / "config.yaml").write_text("train: {max_epochs: 3\n")
    rc, out = _snakemake_dry_run(workdir)
    assert rc != 0 and "config/config.yaml is not valid YAML" in out and "line 2" in out


@pytest.mark.xfail(reason="Snakemake 9's command line reads --configfile before the Snakefile runs "
                          "and says 'Config file is not valid JSON or YAML' without the path; no "
                          "workflow code can intercept it (python -m pipeline validate names it)")
def test_snakemake_names_a_broken_configfile_option(workdir):
    broken = workdir / "broken.yaml"
    broken.write_text("train: {max_epochs: 3\n")
    rc, out = _snakemake_dry_run(workdir, "--configfile", str(broken))
    assert rc != 0 and str(broken) in out and "Traceback" not in out


@pytest.mark.xfail(reason="Snakemake 9's command line opens --configfile before the Snakefile runs "
                          "and prints a FileNotFoundError traceback; no workflow code can intercept it")
def test_snakemake_names_a_missing_configfile_option(workdir):
    missing = workdir / "missing.yaml"
    rc, out = _snakemake_dry_run(workdir, "--configfile", str(missing))
    assert rc != 0 and str(missing) in out and "Traceback" not in out


@pytest.mark.parametrize("windows", [[[5, 3]], [[-1, 2]], [[1, 2, 3]]])
def test_bad_checkpoint_windows_are_refused_before_any_job(windows):
    with pytest.raises(ConfigError, match="train.checkpoints.windows.0"):
        validate_config({"train": {"checkpoints": {"windows": windows}}})
