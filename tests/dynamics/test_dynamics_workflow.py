"""The feature-dynamics family end to end (issue 9): a tiny config through Snakemake's `dynamics`
target -- tables with their schemas, figures, and the paper's qualitative result."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline.core.tables import read_parquet_metadata
from pipeline.dynamics import tables as T

DYN = {
    "data": {"train_subset": 300, "test_subset": 150},
    "datasets": ["digits"],
    "models": ["mlp"],
    "corruptions": [0.0, 0.8],
    "seeds": [0],
    "train": {"max_epochs": 12, "target_train_accuracy": 1.0, "num_threads": 1,
              "overrides": {"mlp": {"optimizer": "adam", "lr": 0.001}},
              "checkpoints": {"early_every": 4, "early_until": 12, "late_every": 5, "windows": [[8, 12]]}},
    "probes": {"settings": [{"name": "masc", "params": {"variance": 0.99}}]},
    "transfer": {"edited_model": {"enabled": False}, "intervention": {"enabled": False},
                 "relabel_retrain": {"enabled": False}},
    "arithmetic": {"enabled": False},
    "dynamics": {
        "enabled": True,
        "pairs": [["digits", "mlp"], ["digits", "bottleneck_mlp"]],
        "depths": {"mlp": ["fc1", "fc2"]},
        "deep_epochs": [4, 12],
        "windows": [[8, 12], [12, 8]],   # memory and transferability windows, the same in both runs
        "trajectory_samples": 5,
        "sgd_noise": {"enabled": True, "n_updates": 8, "n_inputs": 2, "n_resamples": 19,
                      "depths": {"mlp": ["fc1"], "bottleneck_mlp": ["fc1"]}},
    },
}


@pytest.mark.slow
def test_dynamics_end_to_end(tmp_path, snakemake):
    snakemake("--cores", "2", "dynamics", workdir=tmp_path, config=DYN)
    tables = tmp_path / "results/tables"
    comp = pd.read_parquet(tables / "composite.parquet")
    point = pd.read_parquet(tables / "composite_pointwise.parquet")
    traj = pd.read_parquet(tables / "dynamics_trajectories.parquet")
    sgd = pd.read_parquet(tables / "sgd_noise.parquet")
    welch = pd.read_parquet(tables / "dynamics_welch.parquet")
    T.check_frame(comp, T.COMPOSITE_COLUMNS, T.COMPOSITE_KEYS, "composite")
    T.check_frame(point, T.POINTWISE_COLUMNS, T.POINTWISE_KEYS, "pointwise")
    T.check_frame(traj, T.TRAJECTORY_COLUMNS, T.TRAJECTORY_KEYS, "trajectories")
    T.check_frame(sgd, T.SGD_NOISE_COLUMNS, T.SGD_NOISE_KEYS, "sgd_noise")
    T.check_frame(welch, T.WELCH_COLUMNS, T.WELCH_KEYS, "welch")
    assert welch.empty  # one seed: no test across seeds

    # provenance: the choices and the grid actually used
    meta = read_parquet_metadata(tables / "composite.parquet")
    assert "choice.resnet20_second_basic_block" in meta and "choice.consistency_distribution" in meta
    run_meta = read_parquet_metadata(
        tmp_path / "results/runs/digits/mlp/c0.8/s0/standard/dynamics/composite.parquet")
    assert json.loads(run_meta["windows"]) == [[8, 12], [12, 8]]
    assert json.loads(run_meta["depths"]) == ["fc1", "fc2"]

    # every split, the train subsets of the noisy run, the control columns on the test split
    assert set(comp["split"]) == {"train", "test", "test_blur5"}
    noisy_train = comp[(comp.corruption == 0.8) & (comp.split == "train") & (comp.model == "mlp")]
    assert set(noisy_train["subset"]) == {"all", "clean", "corrupted"}
    assert comp[comp.split == "test"]["control_accuracy"].notna().all()
    assert point["dense"].all() and set(point["n_epochs"]) == {5}

    # the paper's qualitative result, on the MLP test set with the final deep part
    test = comp[(comp.model == "mlp") & (comp.split == "test") & (comp.subset == "all")
                & (comp.deep_epoch == 12)]
    # (clean run: after 12 epochs the deep part already relies on the trained shallow features;
    # on the noisy run every composite is near the memorizing network's low test accuracy)
    for depth in ("fc1", "fc2"):
        d = test[(test.corruption == 0.0) & (test.depth == depth)].set_index("shallow_epoch")
        full = d.loc[12, "accuracy"]
        assert d.loc[0, "accuracy"] < full - 0.05, depth               # the initial shallow part fails
        assert d.loc[0, "cross_entropy"] > d.loc[11, "cross_entropy"], depth
        assert d.loc[11, "accuracy"] > full - 0.03, depth              # late ones keep the accuracy
    cons = point[(point.model == "mlp") & (point.split == "test")].groupby("corruption")["consistency"].mean()
    assert cons[0.8] < cons[0.0]

    # 2-D trajectories of the bottleneck model, with the decision regions of its final deep part
    bt = traj[traj.model == "bottleneck_mlp"]
    assert set(bt[bt.kind.isin(["trajectory", "region"])]["depth"]) == {"bottleneck"}
    # the induction experiment (Figs. 11, 14) on every run: PCA points at every saved epoch, perturbed ones
    mlp = traj[traj.model == "mlp"]
    assert set(mlp["kind"]) == {"pca", "perturbed"} and set(mlp["depth"]) == {"fc1"}
    assert sorted(mlp[mlp.kind == "pca"]["epoch"].unique()) == [0, 4, 8, 9, 10, 11, 12]
    assert set(bt["kind"]) == {"trajectory", "region", "pca", "perturbed"}
    assert set(sgd["source"]) == {"sgd", "gaussian", "param_isotropic"}

    plots = tmp_path / "results/plots/dynamics/digits"
    for name in ("memory", "transferability", "composite_curves", "consistency_heatmap", "consistency_ecdf",
                 "eigen_spectra", "feature_pca", "induction"):
        assert (plots / "mlp" / f"{name}.png").stat().st_size > 0
    assert (plots / "bottleneck_mlp" / "trajectories.png").stat().st_size > 0
    assert not (plots / "mlp" / "trajectories.png").exists()
    assert list((tmp_path / "results/benchmarks/dynamics_composite").rglob("*.tsv"))
