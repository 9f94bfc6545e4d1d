"""The Snakemake workflow: lint, dry run, config errors, and an end-to-end run on a tiny config."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.core.tables import RESULT_COLUMNS, read_parquet_metadata

REPO = Path(__file__).resolve().parents[2]

def test_lint(tmp_path, snakemake, tiny_config):
    proc = snakemake("--lint", workdir=tmp_path, config=tiny_config, check=False)
    assert proc.returncode == 0, proc.output


def _dynamics_jobs(default: dict, runs: int) -> dict:
    dyn = default.get("dynamics", {})
    if not dyn.get("enabled"):
        return {}, 0
    pairs = dyn.get("pairs") or [[d, m] for d in default["datasets"] for m in default["models"]]
    extra = sum(1 for d, m in pairs if d not in default["datasets"] or m not in default["models"])
    extra_runs = extra * len(default["corruptions"]) * len(default["seeds"])
    n = runs + extra_runs
    jobs = {"dynamics_composite": n, "dynamics_tables": 1}
    jobs.update({f"dynamics_figures_{d}_{m}": 1 for d, m in pairs})
    if dyn.get("sgd_noise", {}).get("enabled"):
        # and the anisotropy-consistency relation across runs (one job: tables and figures)
        jobs.update({"dynamics_sgd_noise": n, "dynamics_sgd_table": 1, "dynamics_anisotropy": 1})
    return jobs, extra_runs


def test_dry_run_default_config(tmp_path, snakemake):
    """The embedded default's DAG before any training (training is a checkpoint: the per-checkpoint
    jobs join the DAG once a run has trained): per run its labels, training, probe table and the
    three transfer experiments (the intervened variant has its own labels and probe table); then
    the aggregated tables and one plotting job per (dataset, model). Besides, the modular-arithmetic
    experiment: one job per grid cell, then its tables and figures."""
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    pairs = len(default["datasets"]) * len(default["models"])
    runs = pairs * len(default["corruptions"]) * len(default["seeds"])
    assert runs == 3
    proc = snakemake("-n", "--cores", "2", workdir=tmp_path, config=default)
    dynamics, extra = _dynamics_jobs(default, runs)
    # the intervention on the noisy runs only (transfer.intervention.corruptions)
    intervened = pairs * len(default["transfer"]["intervention"]["corruptions"]) * len(default["seeds"])
    assert intervened == 2
    assert proc.job_counts() == {
        "corrupt_labels": runs + intervened + extra, "train": runs + extra, "edit_model": runs,
        "intervene": intervened, "relabel_retrain": runs, "run_probe_table": runs + intervened,
        "aggregate_train_logs": 1, "aggregate_probes": 1, "aggregate_benchmarks": 1, "plots": pairs, "all": 1,
        "report_tables": 1,  # the tables' pages for the report (workflow/rules/report.smk)
        # 3 widths x 3 noise levels, and the all-random-labels control
        "arithmetic_cell": 3 * 3 + 1, "arithmetic_tables": 1, "arithmetic_memorization": 1, "arithmetic_figures": 1,
        # feature dynamics (dynamics.smk): the digits MLP runs and the 2-D bottleneck MLP's own runs
        # (labels, training), a composite and an SGD-noise job per run, two tables, one figures job per pair
        **dynamics,
        **_labels_jobs(default),
    }
    assert not (tmp_path / "results").exists()


def _labels_jobs(config: dict) -> dict[str, int]:
    """The labels family's jobs before training (labels.smk): per judged run its gathered table and
    suspects, per repaired run its retrainings and their gathering; two tables and one figures job
    per pair. The per-epoch detection jobs join once the run has trained."""
    section = config.get("labels", {})
    if not section.get("enabled"):
        return {}
    judged = len(section["pairs"]) * len(section.get("corruptions") or config["corruptions"]) * len(config["seeds"])
    repaired = len(section["pairs"]) * len(section["repair"]["corruptions"]) * len(config["seeds"])
    jobs = {"labels_run_detection": judged, "labels_suspects": judged, "labels_detection_table": 1,
            "labels_figures": len(section["pairs"])}
    if section.get("repair", {}).get("enabled"):
        # one job per retraining: given (from the log), true, 2 detectors x the modes
        retrains = 2 + 2 * len(section["repair"].get("modes", ["relabel", "remove"]))
        jobs.update({"labels_repair_retrain": repaired * retrains, "labels_repair": repaired,
                     "labels_repair_table": 1, "labels_repair_figure": len(section["pairs"])})
    return jobs


@pytest.mark.parametrize("bad, message", [
    ({"train": {"max_epoch": 3}}, r"unknown config key\(s\) \['max_epoch'\] in 'train'"),
    ({"corruptions": [1.5]}, r"config key 'corruptions\.0': 1\.5 is greater than the maximum of 1"),
    ({"models": ["vgg"]}, r"config key 'models\.0' has value 'vgg'"),
    ({"datasets": ["imagenet"]}, r"config key 'datasets\.0' has value 'imagenet'"),
])
def test_bad_config_stops_before_any_job(tmp_path, snakemake, tiny_config, bad, message):
    proc = snakemake("-n", workdir=tmp_path, config={**tiny_config, **bad}, check=False)
    assert proc.returncode != 0
    # the message names the culprit (not merely mentions it: 'imagenet' is in every dataset list)
    assert re.search(r"^invalid configuration: " + message, proc.output, re.M), proc.output[-3000:]
    assert "Job stats" not in proc.output
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_end_to_end_tiny(tmp_path, snakemake, tiny_config):
    snakemake("--cores", "2", workdir=tmp_path, config=tiny_config)
    table = pd.read_parquet(tmp_path / "results/tables/probes.parquet")
    assert list(table.columns) == list(RESULT_COLUMNS)
    assert set(table.corruption) == {0.0, 0.8}
    assert set(table.epoch) == {0, 2, 4}
    masc = table[table.probe == "masc"]
    assert set(masc.layer) == {"fc1", "fc2", "fc3", "fc4"}
    assert set(masc.fit_labels) == {"corrupted", "true"}
    assert set(table.split) == {"train", "test"}
    # the model's own accuracy is a row like any probe's, and agrees with the training log
    model_test = table[(table.probe == "model") & (table.split == "test")].set_index(["corruption", "epoch"])
    log = pd.read_parquet(tmp_path / "results/tables/train_log.parquet").set_index(["corruption", "epoch"])
    for key, row in model_test.iterrows():
        assert row.accuracy == pytest.approx(log.loc[key, "test_acc"])
    assert (table.n_samples[table.split == "test"] == 150).all()
    assert table.accuracy.between(0, 1).all()
    assert (table.n_correct / table.n_samples - table.accuracy).abs().max() < 1e-12
    meta = read_parquet_metadata(tmp_path / "results/tables/probes.parquet")
    assert "pipeline_version" in meta and json.loads(meta["config"])["train"]["max_epochs"] == 4
    for fig in ("masc_dynamics", "training"):
        assert (tmp_path / f"results/plots/digits/mlp/{fig}.png").stat().st_size > 10_000
    # nothing left to do, and no temporary files left behind
    proc = snakemake("-n", "--cores", "2", workdir=tmp_path, config=tiny_config)
    assert proc.job_counts() == {}, proc.output[-3000:]
    assert not list((tmp_path / "results").rglob("*.tmp"))

    # Probe-only rerun: a new probe setting and a new layer list rerun fitting, scoring,
    # aggregation and plots on the saved activations, and never training or extraction.
    changed = {**tiny_config, "probes": {"layers": ["fc1", "fc4"],
                                         "settings": [{"name": "masc", "params": {"variance": 0.5}},
                                                      {"name": "ncm"}]}}
    proc = snakemake("-n", "--cores", "2", workdir=tmp_path, config=changed)
    # per run (2) and checkpoint (3) a probe job, joined per run by its probe block and table; the
    # aggregates and plots that depend on them
    assert proc.job_counts() == {"probe_checkpoint": 6, "probe_block": 2, "run_probe_table": 2, "aggregate_probes": 1,
                                 "aggregate_benchmarks": 1, "plots": 1,
                                 "report_tables": 1, "all": 1}, proc.output[-3000:]


@pytest.mark.slow
def test_persisted_statistics_serve_the_probe_only_rerun(tmp_path, snakemake, tiny_config):
    """storage.persist: moments keeps reduced files (statistics + test activations), deletes the
    activation files, and a probe-only rerun works on what was kept, with no extraction."""
    # two narrow layers keep it fast: refitting from statistics is a d x d eigendecomposition
    config = {**tiny_config, "corruptions": [0.8], "storage": {"persist": "moments"},
              "activations": {"layers": ["fc1", "fc2"]},
              "probes": {"settings": [{"name": "masc", "params": {"variance": 0.99}},
                                      {"name": "velpic"}]},
              "transfer": {name: {"enabled": False}
                           for name in ("edited_model", "intervention", "relabel_retrain")}}
    snakemake("--cores", "2", workdir=tmp_path, config=config)
    run = tmp_path / "results/runs/digits/mlp/c0.8/s0/standard"
    assert sorted(p.name for p in (run / "reduced").glob("*.h5")) == ["epoch_0.h5", "epoch_2.h5", "epoch_4.h5"]
    assert not list(run.glob("activations/*.h5"))  # temporary: deleted once reduced
    table = pd.read_parquet(tmp_path / "results/tables/probes.parquet")
    probes = table[table.probe != "model"]
    assert set(probes.split) == {"test"} and set(probes.probe) == {"masc", "velpic"}
    assert set(probes.layer) == {"fc1", "fc2"}
    assert set(table[table.probe == "model"].split) == {"train", "test"}

    changed = {**config, "probes": {"settings": [{"name": "masc", "params": {"variance": 0.5}},
                                                 {"name": "ncm"}]}}
    proc = snakemake("-n", "--cores", "2", workdir=tmp_path, config=changed)
    # per checkpoint (3) a probe job (fitting from the statistics, scoring the kept test activations)
    assert proc.job_counts() == {"probe_checkpoint": 3, "probe_block": 1, "run_probe_table": 1, "aggregate_probes": 1,
                                 "aggregate_benchmarks": 1, "plots": 1,
                                 "report_tables": 1, "all": 1}, proc.output[-3000:]
    snakemake("--cores", "2", workdir=tmp_path, config=changed)
    table = pd.read_parquet(tmp_path / "results/tables/probes.parquet")
    assert set(table.probe) == {"model", "masc", "ncm"}
    assert not list(run.glob("activations/*.h5"))


def test_a_damaged_aggregated_table_is_set_aside_so_its_job_reruns(tmp_path, snakemake, tiny_config):
    """Snakemake looks at modification times only: a garbage table newer than its inputs would
    count as up to date. Before the DAG is built it is moved to ``<name>.damaged`` (nothing lost)."""
    from pipeline.workflow import set_aside_damaged_tables

    tables = tmp_path / "results" / "tables"
    tables.mkdir(parents=True)
    (tables / "probes.parquet").write_bytes(b"PAR1 not a table")
    good = tables / "other.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(good)
    result = snakemake("-n", "--cores", "1", workdir=tmp_path, config=tiny_config)
    assert "probes.parquet is not a readable table" in result.output
    assert not (tables / "probes.parquet").exists()
    assert (tables / "probes.parquet.damaged").read_bytes() == b"PAR1 not a table"
    assert "aggregate_probes" in result.job_counts()
    assert good.exists() and set_aside_damaged_tables(tables) == []
