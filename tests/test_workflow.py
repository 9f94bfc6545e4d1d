"""The Snakemake workflow: lint, dry run, config errors, and an end-to-end run on a tiny config."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.io import RESULT_COLUMNS, read_parquet_metadata

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "data": {"train_subset": 300, "test_subset": 150},
    "datasets": ["digits"],
    "models": ["mlp"],
    "corruptions": [0.0, 0.8],
    "seeds": [0],
    "train": {"max_epochs": 4, "target_train_accuracy": 1.0, "num_threads": 1,
              "overrides": {"mlp": {"lr": 0.01}}},
    "probes": {"settings": [{"name": "masc", "params": {"variance": 0.99}}]},
}


def snakemake(*args, workdir: Path, config: dict | None = None, check: bool = True, timeout: int = 900):
    """Run snakemake from this interpreter's environment, in ``workdir``."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    if config is not None:
        path = workdir / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd += ["--configfile", str(path)]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(cmd + list(args), capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def jobs_in_dry_run(output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    counts, in_table = {}, False
    for line in output.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table:
            if len(parts) == 2 and parts[1].isdigit():
                if parts[0] != "total":
                    counts[parts[0]] = int(parts[1])
            elif parts and not set(parts[0]) <= set("-"):
                in_table = False
    return counts


def test_lint(tmp_path):
    proc = snakemake("--lint", workdir=tmp_path, config=TINY, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dry_run_default_config(tmp_path):
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    proc = snakemake("-n", "--cores", "2", workdir=tmp_path, config=default)
    out = proc.stdout + proc.stderr
    assert "corrupt_labels" in out and "train" in out


@pytest.mark.parametrize("bad, culprit", [
    ({"train": {"max_epoch": 3}}, "max_epoch"),
    ({"corruptions": [1.5]}, "corruptions"),
    ({"models": ["vgg"]}, "vgg"),
    ({"datasets": ["imagenet"]}, "imagenet"),
])
def test_bad_config_stops_before_any_job(tmp_path, bad, culprit):
    proc = snakemake("-n", workdir=tmp_path, config={**TINY, **bad}, check=False)
    assert proc.returncode != 0
    assert culprit in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_end_to_end_tiny(tmp_path):
    snakemake("--cores", "2", workdir=tmp_path, config=TINY)
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
    proc = snakemake("-n", "--cores", "2", workdir=tmp_path, config=TINY)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert not list((tmp_path / "results").rglob("*.tmp"))

    # Probe-only rerun: a new probe setting and a new layer list rerun fitting, scoring,
    # aggregation and plots on the saved activations, and never training or extraction.
    changed = {**TINY, "probes": {"layers": ["fc1", "fc4"],
                                  "settings": [{"name": "masc", "params": {"variance": 0.5}},
                                               {"name": "ncm"}]}}
    proc = snakemake("-n", "--cores", "2", workdir=tmp_path, config=changed)
    jobs = jobs_in_dry_run(proc.stdout + proc.stderr)
    assert jobs.get("fit_subspaces") == 6 and jobs.get("score_probes") == 6, jobs
    assert "aggregate_probes" in jobs
    assert not {"train", "extract_activations", "corrupt_labels"} & set(jobs), jobs


@pytest.mark.slow
def test_persisted_statistics_serve_the_probe_only_rerun(tmp_path):
    """storage.persist: moments keeps reduced files (statistics + test activations), deletes the
    activation files, and a probe-only rerun works on what was kept, with no extraction."""
    # two narrow layers keep it fast: refitting from statistics is a d x d eigendecomposition
    config = {**TINY, "corruptions": [0.8], "storage": {"persist": "moments"},
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
    jobs = jobs_in_dry_run(proc.stdout + proc.stderr)
    assert jobs.get("fit_subspaces") == 3 and jobs.get("score_probes") == 3, jobs
    assert not {"train", "extract_activations", "reduce_activations"} & set(jobs), jobs
    snakemake("--cores", "2", workdir=tmp_path, config=changed)
    table = pd.read_parquet(tmp_path / "results/tables/probes.parquet")
    assert set(table.probe) == {"model", "masc", "ncm"}
    assert not list(run.glob("activations/*.h5"))
