"""storage.fused (issue 11): extraction and probing of a checkpoint in one job, no activation file.

* the fused path gives the same probe-table rows (and the same fitted probes) as the staged one
  (extract -> activation file -> fit + score) on a tiny trained run, stage functions called directly;
* the DAG: with every layer fused there is no extract job, one probe_fused job per checkpoint; with
  some layers fused, both paths run and only the staged table carries the model's rows;
* config checks: unknown fused layers and a relabel experiment that would need a fused layer's file
  are refused before any job runs.
"""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from pipeline.config import validate_config
from pipeline.core.config import ConfigError, Run
from pipeline.core.tables import MODEL_LAYER
from pipeline.images import stages

KEYS = ["dataset", "model", "corruption", "seed", "variant", "epoch", "layer", "probe",
        "probe_setting", "fit_labels", "split", "target"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained digits MLP run (labels, checkpoints at epochs 0, 2, 4)."""
    from conftest import TINY

    root = tmp_path_factory.mktemp("fused")
    config = {**TINY, "probes": {"settings": [{"name": "masc", "params": {"variance": 0.99}},
                                              {"name": "velpic", "params": {"sign": "class_mean"}},
                                              {"name": "ncm"}]}}
    run = Run("digits", "mlp", 0.8, 0)
    run_dir = root / "results" / run.path
    stages.labels(config, run, run_dir / "labels.npz")
    stages.train(config, run, run_dir / "labels.npz", run_dir)
    return config, run, run_dir


def _rows(path) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values(KEYS).reset_index(drop=True)


@pytest.mark.parametrize("device", [None, "cpu"])
def test_fused_rows_equal_staged_rows(trained, tmp_path, device):
    config, run, run_dir = trained
    config = {**config, "probes": {**config["probes"], "device": device}}
    epoch = 4
    ckpt, labels = run_dir / "checkpoints" / f"epoch_{epoch}.pt", run_dir / "labels.npz"
    acts = tmp_path / "acts.h5"
    stages.extract(config, run, epoch, labels, ckpt, acts)
    stages.probe(config, run, epoch, acts, tmp_path / "staged.h5", tmp_path / "staged.parquet")
    timings = stages.probe_fused(config, run, epoch, labels, ckpt, tmp_path / "fused.h5",
                                 tmp_path / "fused.parquet")
    assert timings["forward_passes"] == 1  # every layer fits in memory: one forward pass
    staged, fused = _rows(tmp_path / "staged.parquet"), _rows(tmp_path / "fused.parquet")
    assert len(staged) > 0 and set(staged.layer) == {MODEL_LAYER, "fc1", "fc2", "fc3", "fc4"}
    pd.testing.assert_frame_equal(staged, fused)
    # the same fitted probes, array for array
    with h5py.File(tmp_path / "staged.h5") as a, h5py.File(tmp_path / "fused.h5") as b:
        names = []
        a.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert names
        for name in names:
            np.testing.assert_array_equal(a[name][()], b[name][()], err_msg=name)
        assert b.attrs["fused"]


def test_fused_in_groups_and_without_model_rows(trained, tmp_path):
    """A memory bound smaller than the layers: one forward pass per group, same rows; and the
    split-path table leaves the model's rows to the staged table."""
    config, run, run_dir = trained
    epoch = 2
    ckpt, labels = run_dir / "checkpoints" / f"epoch_{epoch}.pt", run_dir / "labels.npz"
    stages.probe_fused(config, run, epoch, labels, ckpt, tmp_path / "all.h5", tmp_path / "all.parquet")
    timings = stages.probe_fused(config, run, epoch, labels, ckpt, tmp_path / "g.h5", tmp_path / "g.parquet",
                                 max_bytes=1)
    assert timings["forward_passes"] == 2 * 4  # fit, then score: each layer alone
    pd.testing.assert_frame_equal(_rows(tmp_path / "all.parquet"), _rows(tmp_path / "g.parquet"))
    stages.probe_fused(config, run, epoch, labels, ckpt, tmp_path / "p.h5", tmp_path / "p.parquet",
                       layers=["fc1"], model_rows=False)
    part = _rows(tmp_path / "p.parquet")
    assert set(part.layer) == {"fc1"}
    whole = _rows(tmp_path / "all.parquet")
    pd.testing.assert_frame_equal(part, whole[whole.layer == "fc1"].reset_index(drop=True))


def test_fused_config_checks():
    from pipeline.workflow import check_fused, probe_layer_split

    base = {"datasets": ["digits"], "models": ["mlp"]}
    config = validate_config({**base, "storage": {"fused": True}})
    assert probe_layer_split(config, "mlp") == ([], ["fc1", "fc2", "fc3", "fc4"])
    config = validate_config({**base, "storage": {"fused": {"mlp": ["fc4", "fc1"]}},
                              "probes": {"layers": ["fc1", "fc2"]}})
    assert probe_layer_split(config, "mlp") == (["fc2"], ["fc1"])
    with pytest.raises(ConfigError, match=r"'storage.fused': \['block1'\] are not probed layers"):
        check_fused(validate_config({**base, "storage": {"fused": ["block1"]}}))
    with pytest.raises(ConfigError, match="relabel_retrain reads the final checkpoint's activation file"):
        check_fused(validate_config({**base, "storage": {"fused": True},
                                     "transfer": {"relabel_retrain": {"enabled": True}}}))
    # relabelling on stored layers only: fine
    check_fused(validate_config({**base, "storage": {"fused": ["fc1"]},
                                 "transfer": {"relabel_retrain": {"enabled": True, "layers": ["fc4"]}}}))


def _fake_trained(workdir, corruption, epochs=(0, 2, 4)):
    import time

    run = workdir / f"results/runs/digits/mlp/c{corruption}/s0/standard"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "labels.npz").write_bytes(b"")
    time.sleep(0.01)
    (run / "train_log.parquet").write_bytes(b"")
    (run / "checkpoints" / "index.json").write_text(f'{{"epochs": {list(epochs)}}}')


@pytest.mark.parametrize("fused, expected", [
    (True, {"probe_fused": 3}),
    (["fc1"], {"probe_fused": 3, "extract_activations": 3, "probe_checkpoint": 3}),
    (False, {"extract_activations": 3, "probe_checkpoint": 3}),
])
def test_dag_has_no_extract_jobs_for_fused_layers(tmp_path, snakemake, tiny_config, fused, expected):
    config = {**tiny_config, "storage": {"fused": fused}, "dynamics": {"enabled": False},
              "transfer": {"relabel_retrain": {"enabled": False}, "edited_model": {"enabled": False},
                           "intervention": {"enabled": False}}}
    _fake_trained(tmp_path, "0.8")
    counts = snakemake("-n", "--cores", "1", workdir=tmp_path, config=config).job_counts()
    per_checkpoint = {r: counts.get(r, 0) for r in ("probe_fused", "extract_activations", "probe_checkpoint")}
    assert per_checkpoint == {**dict.fromkeys(per_checkpoint, 0), **expected}, counts


def test_bad_fused_config_stops_the_workflow(tmp_path, snakemake, tiny_config):
    config = {**tiny_config, "storage": {"fused": True}, "transfer": {"relabel_retrain": {"enabled": True}}}
    proc = snakemake("-n", workdir=tmp_path, config=config, check=False)
    assert proc.returncode != 0
    assert "invalid configuration: config key 'storage.fused'" in proc.output, proc.output[-2000:]
