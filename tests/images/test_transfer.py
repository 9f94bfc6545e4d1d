"""The transfer experiments in the workflow: a tiny snakemake run with all three enabled."""

import json

import pandas as pd
import pytest

from pipeline.config import validate_config
from pipeline.core.config import Run
from pipeline.core.tables import RESULT_COLUMNS, check_result_schema
from pipeline.workflow import transfer_tables

TABLES = ["results/tables/probes.parquet", "results/tables/train_log.parquet"]


@pytest.fixture
def transfer_config(tiny_config) -> dict:
    """The shared tiny config, smaller (one run of one epoch, one probe), with all three transfer
    experiments enabled."""
    return {
        **tiny_config,
        "data": {"train_subset": 120, "test_subset": 60},
        "corruptions": [0.5],
        "train": {**tiny_config["train"], "max_epochs": 1, "overrides": {"mlp": {"optimizer": "adam", "lr": 0.001}}},
        "probes": {"settings": [{"name": "velpic"}]},
        "storage": {"epochs": [1, 3]},  # probe (and edit) only these checkpoints: fewer jobs
        "transfer": {
            "edited_model": {"enabled": True},
            "intervention": {"enabled": True, "epoch": 1, "extra_epochs": 2, "checkpoint_every": 2},
            "relabel_retrain": {"enabled": True, "protocols": ["heldout_true"], "max_epochs": 2, "patience": 1},
        },
    }


def dry_run_jobs(snakemake, workdir, config: dict) -> dict[str, int]:
    """Rule -> job count of a dry run for the two tables (no plots)."""
    return snakemake("-n", "--cores", "2", *TABLES, workdir=workdir, config=config).job_counts()


def test_transfer_tables_follow_the_config(transfer_config):
    config = validate_config(transfer_config)
    runs = [Run("digits", "mlp", 0.5, 0), Run("digits", "mlp", 0.5, 0, "intervene-e1")]
    assert transfer_tables(config, runs) == ["results/runs/digits/mlp/c0.5/s0/standard/edits/edited_model.parquet",
                                             "results/runs/digits/mlp/c0.5/s0/standard/relabel/heldout_true.parquet"]
    off = validate_config({**transfer_config, "transfer": {}})
    assert transfer_tables(off, runs) == []


@pytest.mark.slow
def test_transfer_rows_land_in_the_results_table(tmp_path, snakemake, transfer_config):
    snakemake("--cores", "2", *TABLES, workdir=tmp_path, config=transfer_config)
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
    # the edit shows up in the model rows at epoch E: the edited model predicts what VeLPIC on the
    # last probe layer (fitted on the corrupted labels) predicts, so three routes give the same
    # test count: the intervened model's row, the VeLPIC probe of that checkpoint, and the
    # weight-editing experiment (bias zeroed) on the standard run's checkpoint it branched from
    index = json.loads((tmp_path / "results/runs/digits/mlp/c0.5/s0/intervene-e1/checkpoints/index.json")
                       .read_text())
    assert index["intervention"]["branched_from"].endswith("standard/checkpoints/epoch_1.pt")
    at_edit = intervened[(intervened.epoch == 1) & (intervened.split == "test")]
    model_row = at_edit[at_edit.probe == "model"]
    velpic_fc4 = at_edit[(at_edit.probe == "velpic") & (at_edit.layer == "fc4") & (at_edit.fit_labels == "corrupted")]
    edit_zero = edited[(edited.split == "test") & (edited.fit_labels == "corrupted")
                       & (edited.probe_setting == "bias=zero,sign=class_mean")]
    assert len(model_row) == len(velpic_fc4) == len(edit_zero) == 1
    n_correct = model_row.n_correct.iloc[0]
    assert velpic_fc4.n_correct.iloc[0] == edit_zero.n_correct.iloc[0] == n_correct
    at_e = log[(log.variant == "intervene-e1") & (log.epoch == 1)].test_acc.iloc[0]  # after the edit
    assert at_e == pytest.approx(n_correct / 60)
    # ... and it is not the unedited model (the standard run at epoch 1)
    assert at_e != pytest.approx(log[(log.variant == "standard") & (log.epoch == 1)].test_acc.iloc[0])

    # relabel and retrain: from the final standard checkpoint, the chosen layer, both label sources
    relabel = table[table.probe.isin(["relabel_retrain", "relabel_labels"])]
    assert set(relabel.epoch) == {1} and set(relabel.variant) == {"standard"}
    assert set(relabel.probe_setting) == {"protocol=heldout_true,relabel=in_sample,variance=0.99"}
    assert set(relabel.fit_labels) == {"corrupted", "true"}
    chosen = relabel.groupby("fit_labels").layer.unique()  # one layer per label source
    assert all(len(layers) == 1 and layers[0] in {"fc1", "fc2", "fc3", "fc4"} for layers in chosen), chosen
    assert (relabel[(relabel.probe == "relabel_retrain") & (relabel.split == "test")].n_samples == 60).all()

    # each experiment reruns only when its own config changes
    assert dry_run_jobs(snakemake, tmp_path, transfer_config) == {}
    changed = json.loads(json.dumps(transfer_config))
    changed["transfer"]["relabel_retrain"]["patience"] = 2
    changed["transfer"]["edited_model"]["bias"] = ["zero"]
    assert dry_run_jobs(snakemake, tmp_path, changed) == {"relabel_retrain": 1, "edit_model": 1, "aggregate_probes": 1}
    changed = json.loads(json.dumps(transfer_config))
    changed["transfer"]["intervention"]["extra_epochs"] = 3
    # (intervene is a checkpoint: its extraction and probe jobs join the DAG once it has run)
    assert dry_run_jobs(snakemake, tmp_path, changed) == {"intervene": 1, "aggregate_train_logs": 1,
                                                          "run_probe_table": 1, "aggregate_probes": 1}
