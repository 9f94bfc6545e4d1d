"""Bad inputs and damaged artifacts (issue 15), the dynamics family, storage.fused, probes.device, the
plan command and `--config` strings: each is refused before any job with one message naming the key
or file and what to do, and valid input given as `snakemake --config` strings is accepted."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import validate_config
from pipeline.core.config import ConfigError, apply_schema
from pipeline.core.errors import ArtifactError

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"),
       "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

#: a tiny grid with the dynamics family on: runs save epochs 0, 2, 4, 6, 8, 10 (max_epochs 10)
DYN = {
    "datasets": ["digits"], "models": ["mlp"], "corruptions": [0.0], "seeds": [0],
    "train": {"max_epochs": 10, "checkpoints": {"early_every": 2, "early_until": 10}},
    "arithmetic": {"enabled": False},
    "dynamics": {"enabled": True, "pairs": [["digits", "mlp"]]},
}


def dyn(**section) -> dict:
    """:data:`DYN` with ``section`` merged into its dynamics section."""
    config = copy.deepcopy(DYN)
    config["dynamics"].update(section)
    return config


def refused(config: dict, *fragments: str) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message
    return message


def test_the_tiny_dynamics_config_is_valid():
    config = validate_config(dyn(depths={"mlp": ["fc1", "fc2"]}, deep_epochs=[4, "final"],
                                 windows=[[0, 4], [6, 2]], allow_sparse=True, figure_depth="fc2"))
    assert config["dynamics"]["windows"] == [[0, 4], [6, 2]]  # [6, 2]: a transferability window


# ----------------------------------------------------------------------------- caught after compute before

@pytest.mark.parametrize("section, key", [
    ({"depths": {"mlp": ["fc1", "conv9"]}}, "dynamics.depths.mlp"),
    ({"sgd_noise": {"enabled": True, "depths": {"mlp": ["conv9"]}}}, "dynamics.sgd_noise.depths.mlp"),
    ({"ablations": {"enabled": True, "epoch": 4, "depths": {"mlp": ["conv9"]}}}, "dynamics.ablations.depths.mlp"),
])
def test_depths_naming_no_boundary_of_the_model_are_refused(section, key):
    message = refused(dyn(**section), f"'{key}'", "'conv9'", "boundaries")
    assert "fc1" in message  # the boundaries it does have


def test_an_unknown_figure_depth_is_refused():
    refused(dyn(depths={"mlp": ["fc1", "fc2"]}, figure_depth="fc3"), "'dynamics.figure_depth'", "'fc3'",
            "['fc1', 'fc2']")


def test_dynamics_pairs_naming_an_unknown_model_or_dataset_are_refused():
    refused(dyn(pairs=[["digits", "mlpx"]]), "'dynamics.pairs.0'", "'mlpx'", "bottleneck_mlp")
    refused(dyn(pairs=[["digitz", "mlp"]]), "'dynamics.pairs.0'", "'digitz'")


def test_dynamics_corruptions_that_share_a_run_folder_are_refused():
    refused(dyn(corruptions=[0.8, 0.8000001]), "'dynamics.corruptions'", "c0.8")
    refused(dyn(corruptions=[0.5, 0.5]), "'dynamics.corruptions'", "c0.5")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is visible here")
def test_cuda_without_a_gpu_is_one_line_exit_2_at_validation(tmp_path):
    refused({"probes": {"device": "cuda"}}, "probes.device", "no GPU")
    refused({"probes": {"device": "cuda:1"}}, "probes.device", "no GPU")
    # a plan is for the cluster's GPUs: not refused there
    assert validate_config({"probes": {"device": "cuda"}}, devices=False)["probes"]["device"] == "cuda"
    done = subprocess.run([sys.executable, "-m", "pipeline", "validate", "--config-json",
                           '{"probes": {"device": "cuda"}}'], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "probes.device" in done.stderr, done.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is visible here")
def test_a_local_snakemake_with_cuda_and_no_gpu_stops_before_any_job(tmp_path, snakemake, tiny_config):
    proc = snakemake("-n", workdir=tmp_path, config={**tiny_config, "probes": {**tiny_config["probes"],
                                                                               "device": "cuda"}},
                     check=False)
    assert proc.returncode != 0
    assert "invalid configuration" in proc.output and "probes.device" in proc.output, proc.output[-2000:]
    assert "Traceback" not in proc.output and "Job stats" not in proc.output


@pytest.mark.parametrize("text, fragment", [
    ("models: [mlp\n", "is not valid YAML (line 2"),
    ("- mlp\n- cnn\n", "must hold a mapping"),
    ("dynamics: {enabled: true, pairs: [[digits, mlpx]]}\n", "'dynamics.pairs.0': model 'mlpx'"),
])
def test_plan_refuses_a_bad_config_in_one_line(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-m", "pipeline", "plan", "--configfile", str(path)], cwd=tmp_path,
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], done.stderr
    if "pairs" not in text:
        assert str(path) in lines[0]


# ----------------------------------------------------------------------------- accepted silently before

def test_a_window_past_max_epochs_or_ending_at_an_unsaved_epoch_is_refused():
    refused(dyn(windows=[[12, 4]]), "'dynamics.windows.0'", "[12, 4]", "train.max_epochs = 10")
    refused(dyn(windows=[[2, 20]]), "'dynamics.windows.0'", "epoch 20", "never saved")
    # a window with unsaved epochs, unless allow_sparse (the run would stop at it after computing)
    refused(dyn(windows=[[0, 4]], **{"allow_sparse": False}) | {"train": {"max_epochs": 10, "checkpoints": {
        "early_every": 4, "early_until": 10}}}, "'dynamics.windows.0'", "allow_sparse")


@pytest.mark.parametrize("key", ["deep_epochs", "shallow_epochs"])
def test_epochs_that_are_never_saved_are_refused_naming_the_schedule(key):
    # before: 0 composites, exit 0
    refused(dyn(**{key: [3, 12]}), f"'dynamics.{key}'", "[3, 12]", "no composite", "[0, 2, 4, 6, 8, 10]",
            "train.max_epochs = 10")
    # some saved epochs: the others are skipped and logged per run (a shorter max_epochs given on
    # the command line must not make the default config invalid)
    for spec in ([3, "final"], [3, 4]):
        assert validate_config(dyn(**{key: spec}))["dynamics"][key] == spec


def test_sgd_noise_and_ablation_epochs_must_be_saved():
    refused(dyn(sgd_noise={"enabled": True, "epoch": 5}), "'dynamics.sgd_noise.epoch'", "[0, 2, 4, 6, 8, 10]")
    refused(dyn(ablations={"enabled": True, "epoch": 7}), "'dynamics.ablations.epoch'", "[0, 2, 4, 6, 8, 10]")


def test_model_name_typos_in_fused_and_depths_are_refused():
    refused({"models": ["mlp"], "storage": {"fused": {"mlpp": ["fc1"]}}}, "'storage.fused'", "'mlpp'")
    refused(dyn(depths={"mlpp": ["fc1"]}), "'dynamics.depths'", "'mlpp'")


def test_control_splits_outside_the_splits_are_refused():
    refused(dyn(splits=["train"], control={"splits": ["test"]}), "'dynamics.control.splits'", "['test']")
    validate_config(dyn(splits=["train"], control={"enabled": False, "splits": ["test"]}))


# ----------------------------------------------------------------------------- --config strings

def test_integer_or_final_keys_take_their_numbers_as_strings():
    # what `snakemake --config` passes: every scalar of a nested value is a string
    config = apply_schema({"dynamics": {"deep_epochs": ["4", "final"], "shallow_epochs": ["0", "2"],
                                        "windows": [["0", "4"], ["2", "final"]], "sgd_noise": {"epoch": "4"}},
                           "activations": {"compression": "null"}})
    dynamics = config["dynamics"]
    assert dynamics["deep_epochs"] == [4, "final"] and dynamics["shallow_epochs"] == [0, 2]
    assert dynamics["windows"] == [[0, 4], [2, "final"]] and dynamics["sgd_noise"]["epoch"] == 4
    assert config["activations"]["compression"] is None
    # words that are not the allowed literal stay strings, for the schema to refuse
    with pytest.raises(ConfigError, match="dynamics.deep_epochs"):
        apply_schema({"dynamics": {"deep_epochs": ["last"]}})


def test_snakemake_config_strings_for_dynamics_epochs_are_accepted(tmp_path, snakemake, tiny_config):
    config = {**tiny_config, "corruptions": [0.0], "dynamics": {"enabled": True, "pairs": [["digits", "mlp"]]}}
    proc = snakemake("-n", "dynamics", "--config",
                     "dynamics={enabled: true, pairs: [[digits, mlp]], deep_epochs: [4], windows: [[0, 4]], "
                     "allow_sparse: true, sgd_noise: {enabled: true, epoch: 4}}",
                     workdir=tmp_path, config=config, check=False)
    assert proc.returncode == 0, proc.output[-3000:]
    counts = proc.job_counts()
    assert counts["dynamics_composite"] == 1 and counts["dynamics_sgd_noise"] == 1, counts


# ----------------------------------------------------------------------------- damaged artifacts, advice

def _fake_trained_run(workdir: Path, index_text: str) -> Path:
    run = workdir / "results/runs/digits/mlp/c0/s0/standard"
    (run / "checkpoints").mkdir(parents=True)
    (run / "labels.npz").write_bytes(b"")
    (run / "train_log.parquet").write_bytes(b"")
    index = run / "checkpoints" / "index.json"
    index.write_text(index_text)
    return index


def test_a_truncated_index_is_named_with_what_to_do(tmp_path, snakemake, tiny_config):
    from pipeline.core.artifacts import read_index

    index = _fake_trained_run(tmp_path, '{"epochs": [0, 2')
    with pytest.raises(ArtifactError) as info:
        read_index(index)
    message = str(info.value)
    assert str(index) in message and "truncated" in message and f"--forcerun {index}" in message
    assert "snakemake --unlock" in message
    with pytest.raises(ArtifactError, match="no list of saved epochs"):
        index.write_text("[]")
        read_index(index)

    # the DAG build names the file instead of a bare JSONDecodeError
    index.write_text('{"epochs": [0, 2')
    config = {**tiny_config, "corruptions": [0.0],
              "dynamics": {"enabled": True, "pairs": [["digits", "mlp"]], "sgd_noise": {"enabled": False}}}
    proc = snakemake("-n", workdir=tmp_path, config=config, check=False)
    assert proc.returncode != 0
    assert "JSONDecodeError" not in proc.output, proc.output[-2000:]
    assert "checkpoints/index.json is truncated or not JSON" in proc.output and "--forcerun" in proc.output


def test_rerun_advice_says_how_to_clear_a_stale_lock(tmp_path):
    from pipeline.core.runtime import read_state, retrain_advice

    assert "snakemake --unlock" in retrain_advice(tmp_path / "checkpoints" / "epoch_2.pt")
    with pytest.raises(ArtifactError, match="snakemake --unlock"):
        read_state(tmp_path / "missing.pt")


def test_a_checkpoint_that_would_run_code_is_refused_without_advice_to_load_it(tmp_path):
    import torch

    from pipeline.core.runtime import load_checkpoint, read_state

    marker = tmp_path / "code_ran"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "epoch_2.pt"
    torch.save({"fc1.weight": RunsCode()}, path)
    with pytest.raises(ArtifactError) as info:
        read_state(path)
    message = str(info.value)
    assert str(path) in message and "GLOBAL" in message and "could run code" in message
    for advice in ("weights_only", "Re-running", "trusted source"):
        assert advice not in message, message
    with pytest.raises(ArtifactError) as info:
        load_checkpoint(path, torch.nn.Linear(2, 2))
    assert "weights_only" not in str(info.value) and "--forcerun" in str(info.value)
    assert not marker.exists()  # nothing in the file ran
    # a damaged file is named as such, again without torch's advice, and not called dangerous
    path.write_bytes(b"\x00garbage, not a torch checkpoint\xff" * 10)
    with pytest.raises(ArtifactError) as info:
        read_state(path)
    message = str(info.value)
    assert message.startswith(f"checkpoint {path} cannot be read (UnpicklingError: ")
    assert "weights_only" not in message and "run code" not in message


def test_the_refusals_reach_the_command_line_as_one_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(dyn(windows=[[12, 4]])))
    done = subprocess.run([sys.executable, "-m", "pipeline", "validate", "--configfile", str(config)],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "dynamics.windows.0" in done.stderr and json.dumps([12, 4]) in done.stderr
