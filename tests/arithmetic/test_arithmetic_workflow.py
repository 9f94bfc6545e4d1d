"""The arithmetic family in the Snakemake workflow: its DAG in the default and paper configs, and a
tiny offline grid end to end (cells, tables, figures) in a temporary working directory."""

from __future__ import annotations

import json

import pandas as pd
import yaml
from conftest import REPO

from pipeline.arithmetic.grid import figure_names, iter_cells
from pipeline.arithmetic.tables import LOG_TABLE_COLUMNS, NEURON_COLUMNS, RESULT_COLUMNS
from pipeline.config import validate_config
from pipeline.core.tables import RESULT_COLUMNS as PROBE_RESULT_COLUMNS
from pipeline.core.tables import RUN_KEY_COLUMNS

ARITH = {"enabled": True, "P": [11], "train_fraction": [0.6], "alpha": [0.6], "width": [16, 48],
         "epochs": 80, "log_every": 10, "checkpoint_every": 40,
         "extra_grids": [{"alpha": [0.6], "noise_mode": ["symmetric"], "tied": [True], "width": [48]},
                         {"alpha": [0.6], "tied": [True], "width": [48]}],
         "memorization": {"enabled": True, "alpha": [0.2], "epochs": 3, "hidden": 32}}


def test_default_config_runs_the_small_grid_and_the_paper_grid_does_not(tmp_path, snakemake):
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    section = validate_config(default)["arithmetic"]
    assert section["enabled"] and section["P"] == [31] and section["width"] == [65, 257, 2049]
    cells = iter_cells(section)
    proc = snakemake("-n", "--cores", "2", "arithmetic", workdir=tmp_path, config=default)
    assert proc.job_counts() == {"arithmetic_cell": len(cells), "arithmetic_tables": 1,
                                 "arithmetic_memorization": 1, "arithmetic_figures": 1, "arithmetic": 1}
    assert len(cells) == 10
    # config/paper.yaml (merged over the default, as Snakemake does) leaves the family off
    from pipeline.plan import workflow_config

    assert workflow_config([str(REPO / "config/paper.yaml")])["arithmetic"]["enabled"] is False


def test_tiny_grid_end_to_end(tmp_path, snakemake, tiny_config):
    config = {**tiny_config, "arithmetic": ARITH}
    snakemake("--cores", "2", "arithmetic", workdir=tmp_path, config=config, timeout=300)
    tables = tmp_path / "results/tables"
    res = pd.read_parquet(tables / "arithmetic.parquet")
    neurons = pd.read_parquet(tables / "arithmetic_neurons.parquet")
    log = pd.read_parquet(tables / "arithmetic_log.parquet")
    memo = pd.read_parquet(tables / "arithmetic_memorization.parquet")
    # MASC / VeLPIC on the hidden layer of every cell, gathered by the workflow (probe-result schema)
    probes = pd.read_parquet(tables / "arithmetic_probes.parquet")
    assert list(probes.columns) == list(PROBE_RESULT_COLUMNS)
    assert set(probes["probe"]) == {"masc", "velpic"} and set(probes["layer"]) == {"hidden"}
    assert list(res.columns) == list(RESULT_COLUMNS)
    assert list(neurons.columns) == list(NEURON_COLUMNS)
    assert list(log.columns) == list(LOG_TABLE_COLUMNS)
    for df in (res, neurons, log, memo, probes):
        assert list(df.columns[:5]) == list(RUN_KEY_COLUMNS)  # every table joins on the run keys
    section = validate_config(config)["arithmetic"]
    n_cells = len(iter_cells(section))
    assert n_cells == 4 and len(res[["model", "corruption", "variant"]].drop_duplicates()) == n_cells
    assert len(probes[["model", "corruption", "variant"]].drop_duplicates()) == n_cells
    # raw / G / R at every checkpoint, the full analysis at the last epoch
    assert sorted(res.loc[res.network == "G", "epoch"].unique()) == [0, 40, 80]
    assert set(res.loc[res.epoch == 80, "network"]) >= {"raw", "G", "R", "prune", "part_G", "G_randfreq"}
    assert set(res["split"]) == {"train_clean", "train_noisy_given", "train_noisy_true", "test"}
    assert len(neurons) == 3 * (16 + 48 + 48 + 48)  # checkpoints x widths of the cells
    assert log.groupby("model")["epoch"].max().eq(80).all()
    # the noisy training labels are fitted by the raw network at the last epoch
    noisy = res[(res.epoch == 80) & (res.network == "raw") & (res.split == "train_noisy_given") & (res.width == 48)
                & ~res.tied]
    assert noisy["accuracy"].item() > 0.9
    assert list(memo["epoch"]) == [0, 1, 2, 3]
    # the figures of the grid, each a file
    plots = tmp_path / "results/plots/arithmetic"
    assert sorted(p.stem for p in plots.glob("*.png")) == sorted(figure_names(section))
    assert "tied" in figure_names(section) and "memorization_order" in figure_names(section)
    # one benchmark and one log per cell job
    bench = list((tmp_path / "results/benchmarks/arithmetic_cell").rglob("*.tsv"))
    assert len(bench) == n_cells
    index = next((tmp_path / "results/arithmetic").rglob("index.json"))
    assert json.loads(index.read_text())["epochs"] == [0, 40, 80]
    # nothing left to do; a changed cell setting reruns the cells (params) and what follows
    assert snakemake("-n", "--cores", "2", "arithmetic", workdir=tmp_path, config=config).job_counts() == {}
    changed = {**config, "arithmetic": {**ARITH, "lr": 0.02}}
    counts = snakemake("-n", "--cores", "2", "arithmetic", workdir=tmp_path, config=changed).job_counts()
    assert counts["arithmetic_cell"] == n_cells and "arithmetic_memorization" not in counts
