"""The arithmetic family on bad input and broken artifacts (issue 15): each case is refused once, when
the config is validated (before any cell trains) or when the artifact is read, with one message
naming the key or file and what to do; the advice given is followed literally where it names a
command."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.arithmetic.cell import cell_settings, run_cell
from pipeline.arithmetic.grid import cell_settings_json, cell_wildcards, cells_by_path
from pipeline.config import validate_config
from pipeline.core.config import ConfigError, load_schema
from pipeline.core.errors import ArtifactError

ARITH_SRC = Path(__file__).resolve().parents[2] / "src/pipeline/arithmetic"
#: a cell small enough to train in a fraction of a second
TINY_CELL = {"P": 7, "train_fraction": 0.6, "alpha": 0.2, "width": 8, "epochs": 4, "log_every": 2,
             "checkpoint_every": 2}


def arithmetic(**section) -> dict:
    return {"arithmetic": {"enabled": True, **section}}


def refused(match: str, **section) -> str:
    with pytest.raises(ConfigError, match=match) as info:
        validate_config(arithmetic(**section))
    return str(info.value)


# ----------------------------------------------------------------------------- config validation

def test_unknown_device_and_cuda_without_a_gpu_are_refused_at_validation():
    message = refused("arithmetic.device", device="gpu")
    assert "auto" in message and "cpu" in message and "cuda" in message  # the allowed values
    if torch.cuda.is_available():
        assert validate_config(arithmetic(device="cuda"))["arithmetic"]["device"] == "cuda"
    else:
        message = refused("arithmetic.device", device="cuda")
        assert "no GPU" in message and "'auto' or 'cpu'" in message
    assert validate_config(arithmetic(device="auto"))["arithmetic"]["device"] == "auto"


def test_a_split_without_training_or_test_pairs_is_refused_naming_p_and_train_fraction():
    # round(0.01 * 25) = 0 training pairs: training divided by zero after the job started
    message = refused("no training pair", P=[5], train_fraction=[0.01])
    assert "arithmetic.P" in message and "arithmetic.train_fraction" in message and "raise" in message
    refused("no test pair", P=[5], train_fraction=[0.99])
    validate_config(arithmetic(P=[5], train_fraction=[0.04], seed=[1]))  # one training pair is enough
    # symmetric noise trains on the same split as every other mode (one pair here too)
    validate_config(arithmetic(P=[5], train_fraction=[0.04], noise_mode=["symmetric"], seed=[1]))


def test_duplicate_partitions_and_prune_fractions_are_refused():
    refused(r"arithmetic\.partition.*non-unique", partition=[[0.1, 0.9], [0.5, 0.5], [0.1, 0.9]])
    refused(r"arithmetic\.partition", partition=[[0.1, 0.9, 0.5]])  # a (gamma_G, gamma_R) pair
    refused(r"arithmetic\.partition", partition=[[0.0, 0.5]])
    refused(r"arithmetic\.prune_fractions.*non-unique", prune_fractions=[0.5, 1.0, 0.5])


def test_mul_needs_a_prime_modulus():
    message = refused(r"arithmetic\.P.*9 is not prime", task=["add", "mul"], P=[9])
    assert "mul" in message
    refused(r"arithmetic\.extra_grids\[0\]\.P.*15 is not prime", P=[11], extra_grids=[{"task": ["mul"], "P": [15]}])
    validate_config(arithmetic(task=["mul"], P=[11]))
    validate_config(arithmetic(task=["add"], P=[9]))  # add and sub need an odd P only


@pytest.mark.parametrize("key", ["alpha", "weight_decay", "train_fraction"])
def test_values_finer_than_their_cell_folder_are_refused(key):
    # a value the folder rounds: the cell would run with one value in a folder naming another
    message = refused(rf"arithmetic\.{key}.*0\.1234567.*write it as 0\.123457", **{key: [0.1234567]})
    assert "6 significant digits" in message
    # two values naming one folder
    refused(rf"arithmetic\.{key}.*write it as 0\.3", **{key: [0.3, 0.30000001]})
    refused(rf"arithmetic\.extra_grids\[0\]\.{key}", extra_grids=[{key: [0.30000001]}])
    validate_config(arithmetic(**{key: [0.3, 0.123457]}))


def test_tied_takes_booleans_only():
    refused(r"arithmetic\.tied.*'yes'.*boolean", tied=["yes"])
    refused(r"arithmetic\.tied.*'on'.*boolean", tied=["on"])
    # strings from snakemake --config spelling a boolean are still read as one
    assert validate_config(arithmetic(tied=["true", "false"]))["arithmetic"]["tied"] == [True, False]


def test_a_config_error_stops_the_command_line_with_status_2_and_no_traceback(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(arithmetic(P=[5], train_fraction=[0.01])))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "validate", "--configfile", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "no training pair" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- cell settings

def test_num_threads_is_not_part_of_a_cells_settings():
    cells = {n: cells_by_path(validate_config(arithmetic(num_threads=n))["arithmetic"]) for n in (1, 2)}
    assert list(cells[1]) == list(cells[2])
    for cell in cells[1].values():
        wildcards = cell_wildcards(cell)  # what the rule's params are computed from
        one, two = (cell_settings_json(cells[n], wildcards) for n in (1, 2))
        assert one == two and "num_threads" not in json.loads(one)


def _module_level_dicts(path: Path) -> list[str]:
    names = []
    for node in ast.parse(path.read_text()).body:
        targets = ([t.id for t in node.targets if isinstance(t, ast.Name)] if isinstance(node, ast.Assign)
                   else [node.target.id] if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                   else [])
        if targets and isinstance(node.value, ast.Dict):
            names += targets
    return names


def test_cell_defaults_come_from_the_schema_only():
    defaults_dicts = {p.name: [n for n in _module_level_dicts(p) if "DEFAULT" in n.upper()]
                      for p in sorted(ARITH_SRC.glob("*.py"))}
    assert not any(defaults_dicts.values()), defaults_dicts
    schema = load_schema()["properties"]["arithmetic"]["properties"]
    cell = cell_settings({"width": 8, "alpha": 0.0})
    for key in ("P", "train_fraction", "task", "noise_mode", "activation", "tied", "optimizer", "weight_decay",
                "seed"):
        assert cell[key] == schema[key]["default"][0], key
    for key in ("epochs", "lr", "checkpoint_every", "log_every", "partition", "ipr_dc", "prune_fractions",
                "device"):
        assert cell[key] == schema[key]["default"], key
    assert (cell["P"], cell["epochs"], cell["weight_decay"], cell["checkpoint_every"]) == (31, 1500, 1.0, 500)
    with pytest.raises(ConfigError, match="width"):  # its default lists several values: a cell needs one
        cell_settings({"alpha": 0.0})
    with pytest.raises(ConfigError, match="num_threads"):
        cell_settings({"width": 8, "alpha": 0.0, "num_threads": 2})


def test_the_default_runs_cells_pass_their_full_settings():
    """The workflow's cells already hold every setting, so the schema's defaults change none of them
    (the default run's rows stay identical)."""
    import yaml

    default = yaml.safe_load((ARITH_SRC.parents[2] / "config/config.yaml").read_text())
    for cell in cells_by_path(validate_config(default)["arithmetic"]).values():
        assert cell_settings(cell) == cell


# ----------------------------------------------------------------------------- artifacts

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def tiny_cell(tmp_path_factory):
    """One tiny cell trained after a killed attempt left a temporary checkpoint behind."""
    import socket

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("cell")
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())
    stale = out / "checkpoints" / f".epoch_2.pt.{host}.{_dead_pid()}.0badc0de.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint")
    paths = run_cell(TINY_CELL, out)
    return out, paths, stale


def test_a_dead_jobs_temporary_checkpoint_is_swept_at_cell_start(tiny_cell):
    out, paths, stale = tiny_cell
    assert not stale.exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0.pt", "epoch_2.pt", "epoch_4.pt"]
    index = json.loads(paths["index"].read_text())
    assert "num_threads" not in index["settings"]


def test_a_truncated_cell_index_is_refused_by_the_tables_job(tiny_cell, tmp_path):
    out, paths, _ = tiny_cell
    index = tmp_path / "cell" / "index.json"
    index.parent.mkdir()
    for name in ("arithmetic.parquet", "arithmetic_neurons.parquet", "train_log.parquet"):
        (index.parent / name).write_bytes((out / name).read_bytes())
    text = paths["index"].read_text()
    index.write_text(text[: len(text) // 2])
    tables = [str(tmp_path / f"{k}.parquet") for k in ("results", "neurons", "log")]
    proc = subprocess.run([sys.executable, "-m", "pipeline", "arithmetic-tables", str(index), "--results", tables[0],
                           "--neurons", tables[1], "--log", tables[2]], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(index) in proc.stderr and f"--forcerun {index}" in proc.stderr
    assert "Traceback" not in proc.stderr and not any(Path(t).exists() for t in tables)
    index.write_text(json.dumps({"settings": {}}))  # valid JSON, but not what a finished cell writes
    with pytest.raises(ArtifactError, match="lacks"):
        from pipeline.arithmetic.grid import read_cell_index

        read_cell_index(index)


def test_memorization_on_a_missing_dataset_advises_what_that_stage_honours(tmp_path):
    from pipeline.arithmetic.memorization import memorization_table
    from pipeline.core.datasets import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError) as info:
        memorization_table({"dataset": "mnist", "alpha": [0.1], "epochs": 1}, root=str(tmp_path))
    message = str(info.value)
    assert "data.download: true" not in message  # the stage never downloads
    assert "arithmetic.memorization.dataset" in message and str(tmp_path) in message
    assert "digits" in message


@pytest.mark.slow
def test_broken_checkpoint_advice_retrains_the_cell(tmp_path, snakemake, tiny_config, monkeypatch):
    """The advice for a broken checkpoint names the cell's index.json to force; deleting that file
    (the advice before) leaves Snakemake nothing to do. Both checked with dry runs after a real run;
    a changed num_threads reruns nothing."""
    from pipeline.arithmetic.train import load_state

    section = {"enabled": True, **TINY_CELL, **{k: [v] for k, v in TINY_CELL.items() if k in (
        "P", "train_fraction", "alpha", "width")}, "memorization": {"enabled": False}}
    config = {**tiny_config, "arithmetic": section}
    target = "results/tables/arithmetic.parquet"
    snakemake(target, "--cores", "2", workdir=tmp_path, config=config)
    cell = next(p.parent for p in (tmp_path / "results/arithmetic").rglob("index.json"))
    relative = cell.relative_to(tmp_path)

    threads = {**config, "arithmetic": {**section, "num_threads": 2}}
    assert snakemake(target, "-n", "--cores", "2", workdir=tmp_path, config=threads).job_counts() == {}

    checkpoint = relative / "checkpoints/epoch_2.pt"
    (tmp_path / checkpoint).write_bytes(b"not a checkpoint")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArtifactError) as info:
        load_state(checkpoint, {"width": 8}, 7)
    message = str(info.value)
    assert str(checkpoint) in message
    advice = re.search(r"snakemake (--forcerun \S+index\.json)", message)
    assert advice, message

    os.replace(tmp_path / relative / "index.json", tmp_path / "index.json.bak")
    # what the old advice said to do: Snakemake then has nothing to do (the table is up to date)
    assert snakemake(target, "-n", "--cores", "2", workdir=tmp_path, config=config).job_counts() == {}
    os.replace(tmp_path / "index.json.bak", tmp_path / relative / "index.json")
    counts = snakemake(target, "-n", "--cores", "2", *advice.group(1).split(), workdir=tmp_path,
                       config=config).job_counts()
    assert counts == {"arithmetic_cell": 1, "arithmetic_tables": 1}
