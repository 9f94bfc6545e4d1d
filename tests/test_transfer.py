"""The transfer experiments in the workflow: a tiny snakemake run with all three enabled."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.config import Run, validate_config
from pipeline.io import RESULT_COLUMNS, check_result_schema
from pipeline.workflow import transfer_tables

REPO = Path(__file__).resolve().parents[1]
TABLES = ["results/tables/probes.parquet", "results/tables/train_log.parquet"]

TINY = {
    "data": {"train_subset": 120, "test_subset": 60},
    "datasets": ["digits"],
    "models": ["mlp"],
    "corruptions": [0.5],
    "seeds": [0],
    "train": {"max_epochs": 1, "target_train_accuracy": 1.0, "num_threads": 1,
              "overrides": {"mlp": {"optimizer": "adam", "lr": 0.001}}},
    "probes": {"settings": [{"name": "velpic"}]},
    "storage": {"epochs": [1, 3]},  # probe (and edit) only these checkpoints: fewer jobs
    "transfer": {
        "edited_model": {"enabled": True},
        "intervention": {"enabled": True, "epoch": 1, "extra_epochs": 2, "checkpoint_every": 2},
        "relabel_retrain": {"enabled": True, "protocols": ["heldout_true"], "max_epochs": 2, "patience": 1},
    },
}


def snakemake(*args, workdir: Path, config: dict, timeout: int = 600):
    """Run snakemake from this interpreter's environment in ``workdir`` (as tests/test_workflow.py)."""
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(path), *args]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def dry_run_jobs(workdir: Path, config: dict) -> set[str]:
    out = snakemake("-n", "--cores", "2", *TABLES, workdir=workdir, config=config)
    rules = set()
    for line in out.splitlines():
        for prefix in ("rule ", "checkpoint ", "localrule ", "localcheckpoint "):
            if line.startswith(prefix) and line.endswith(":"):
                rules.add(line[len(prefix):-1])
    return rules


def test_transfer_tables_follow_the_config():
    config = validate_config(TINY)
    runs = [Run("digits", "mlp", 0.5, 0), Run("digits", "mlp", 0.5, 0, "intervene-e1")]
    assert transfer_tables(config, runs) == ["results/runs/digits/mlp/c0.5/s0/standard/edits/edited_model.parquet",
                                             "results/runs/digits/mlp/c0.5/s0/standard/relabel/heldout_true.parquet"]
    off = validate_config({**TINY, "transfer": {}})
    assert transfer_tables(off, runs) == []


@pytest.mark.slow
def test_transfer_rows_land_in_the_results_table(tmp_path):
    snakemake("--cores", "2", *TABLES, workdir=tmp_path, config=TINY)
    table = pd.read_parquet(tmp_path / "results/tables/probes.parquet")
    assert list(table.columns) == list(RESULT_COLUMNS)
    check_result_schema(table)

    # weight editing: every probed checkpoint of the standard run, both biases and label sources
    edited = table[table.probe == "edited_model"]
    assert set(edited.variant) == {"standard"} and set(edited.layer) == {"output"}
    assert set(edited.epoch) == {1}
    assert set(edited.probe_setting) == {"bias=zero,sign=class_mean", "bias=keep,sign=class_mean"}
    assert set(edited.fit_labels) == {"corrupted", "true"}

    # intervention: the intervened variant's checkpoints after the edit went through extract/fit/score
    intervened = table[table.variant == "intervene-e1"]
    assert set(intervened.probe) == {"model", "velpic"}
    assert set(intervened.epoch) == {1, 3}
    log = pd.read_parquet(tmp_path / "results/tables/train_log.parquet")
    assert list(log[log.variant == "intervene-e1"].epoch) == [0, 1, 2, 3]
    assert list(log[log.variant == "standard"].epoch) == [0, 1]
    # the edit shows up in the model rows at epoch E: the edited model is VeLPIC on the last layer
    at_edit = intervened[(intervened.epoch == 1) & (intervened.split == "test")]
    model_acc = at_edit[at_edit.probe == "model"].accuracy.iloc[0]
    velpic_fc4 = at_edit[(at_edit.probe == "velpic") & (at_edit.layer == "fc4")
                         & (at_edit.fit_labels == "corrupted")].accuracy.iloc[0]
    assert model_acc != pytest.approx(log[(log.variant == "standard") & (log.epoch == 1)].test_acc.iloc[0])
    index = json.loads((tmp_path / "results/runs/digits/mlp/c0.5/s0/intervene-e1/checkpoints/index.json")
                       .read_text())
    assert index["intervention"]["branched_from"].endswith("standard/checkpoints/epoch_1.pt")
    assert 0 <= velpic_fc4 <= 1

    # relabel and retrain: from the final standard checkpoint, the chosen layer, both label sources
    relabel = table[table.probe.isin(["relabel_retrain", "relabel_labels"])]
    assert set(relabel.epoch) == {1} and set(relabel.variant) == {"standard"}
    assert set(relabel.probe_setting) == {"protocol=heldout_true,relabel=in_sample,variance=0.99"}
    assert set(relabel.layer) <= {"fc1", "fc2", "fc3", "fc4"}
    assert (relabel[(relabel.probe == "relabel_retrain") & (relabel.split == "test")].n_samples == 60).all()

    # each experiment reruns only when its own config changes
    changed = json.loads(json.dumps(TINY))
    changed["transfer"]["relabel_retrain"]["patience"] = 2
    changed["transfer"]["edited_model"]["bias"] = ["zero"]
    assert dry_run_jobs(tmp_path, changed) == {"relabel_retrain", "edit_model", "aggregate_probes"}
    changed = json.loads(json.dumps(TINY))
    changed["transfer"]["intervention"]["extra_epochs"] = 3
    jobs = dry_run_jobs(tmp_path, changed)
    assert "intervene" in jobs and not {"train", "edit_model", "relabel_retrain"} & jobs, jobs
